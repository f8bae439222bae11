"""Checks before a distributed run starts, so that what would hang or fail deep inside Ray Train fails
in a second with one line: a worker group the cluster can never place, and a storage endpoint the
cluster's nodes cannot reach."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from simsiam.errors import ConfigError, StorageError

WAIT_ENV = "SIMSIAM_RAY_WAIT_FOR_RESOURCES"  # autoscaling clusters: nodes come when asked for


def worker_resources(num_cpus: float, num_gpus: float) -> dict[str, float]:
    return {k: v for k, v in (("CPU", num_cpus), ("GPU", num_gpus)) if v > 0}


def check_placeable(num_workers: int, per_worker: dict[str, float]) -> None:
    """Raise ConfigError when the live nodes, empty, could not hold `num_workers` workers of `per_worker`."""
    if os.environ.get(WAIT_ENV) or not per_worker:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = sum(min(int(n["Resources"].get(k, 0) // v) for k, v in per_worker.items()) for n in nodes)
    if fits >= num_workers:
        return
    totals = {k: sum(n["Resources"].get(k, 0) for n in nodes) for k in per_worker}
    asked = ", ".join(f"{v:g} {k}" for k, v in per_worker.items())
    have = ", ".join(f"{v:g} {k}" for k, v in totals.items())
    raise ConfigError(f"{num_workers} Ray workers of {asked} each can never be placed: the cluster's {len(nodes)} "
                      f"nodes have {have} in all and room for {fits}; ask for fewer workers or resources (an "
                      f"autoscaling cluster: set {WAIT_ENV}=1)")


@ray.remote(num_cpus=0)
def _connect(host: str, port: int) -> str | None:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        return f"{ray.get_runtime_context().get_node_id()[:12]}: {exc}"
    return None


def check_storage_reachable(endpoint_url: str | None) -> None:
    """Raise StorageError naming `endpoint_url` when a live node cannot open a connection to it."""
    if not endpoint_url:
        return  # AWS S3 itself: the nodes' own chain and routes
    parts = urlsplit(endpoint_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    failures = [f for f in ray.get([_connect.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote(parts.hostname, port) for node in nodes]) if f]
    if failures:
        raise StorageError(f"the storage endpoint {endpoint_url} cannot be reached from {len(failures)} of the "
                           f"{len(nodes)} Ray nodes ({failures[0]}); give the workers an endpoint they can reach "
                           "(storage.endpoint_url or $SIMSIAM_S3_ENDPOINT)")


def check_ray_address(address: str) -> None:
    """Raise ConfigError when $RAY_ADDRESS names a host:port nothing listens on (ray.init would retry
    for minutes). `auto` and `local` are left to Ray."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise ConfigError(f"RAY_ADDRESS={address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({exc.strerror or exc}); "
                          "start it, or unset RAY_ADDRESS to run on a local Ray") from None


def check_cluster_address() -> None:
    """check_ray_address($RAY_ADDRESS) when it is set: before any service starts for the run."""
    if os.environ.get("RAY_ADDRESS"):
        check_ray_address(os.environ["RAY_ADDRESS"])
