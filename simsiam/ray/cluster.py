"""Where and how Ray runs our work: `RayWorkers`, the cluster to connect to, where checkpoints go (S3
or a local path), and the run, scaling and loop configs that a pretraining run and every sweep trial share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

from simsiam.config import Config
from simsiam.library_env import apply_library_defaults
from simsiam.ray.preflight import check_placeable, check_ray_address, check_storage_reachable, worker_resources
from simsiam.storage.client import S3Settings, settings_from_env

STATE_API_ENV = "RAY_API_SERVER_ADDRESS"  # read by Ray's State API client before RAY_ADDRESS


@dataclass
class RayWorkers:
    """The one settings type for Ray: the worker group of a run (or of each sweep trial) and its
    restarts, set by the user; and where its checkpoints go and what it logs to, which the training
    step fills in from the run context (`storage`, `state_path`, `tracking_uri`, `experiment`)."""

    workers: int = 1
    gpus_per_worker: float = 0.0  # 0: CPU workers
    cpus_per_worker: float = 1.0
    max_failures: int = 2  # worker-group restarts from the latest checkpoint
    placement_strategy: str = "PACK"  # SPREAD: workers on different nodes where possible
    num_to_keep: int = 2
    storage: S3Settings | None = None  # Ray's checkpoints: s3://<bucket>/<storage_prefix>/<run name>
    storage_prefix: str = "ray"
    local_storage: str | None = None  # a path instead of S3 (tests, single node)
    state_path: str | None = None  # embedded services' state dir, for workers on this node
    tracking_uri: str | None = None
    experiment: str = "simsiam"

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def storage_uri(self) -> str | None:
        """Where Ray's run directories go, as a user names it (s3://bucket/prefix, or a local path)."""
        if self.storage is not None:
            return f"s3://{self.storage.bucket}/{self.storage_prefix}"
        return self.local_storage

    def checkpoint_uri(self, path: str) -> str:
        """The checkpoint file of a directory Ray reported (bucket/key on S3, else a local path)."""
        from simsiam.checkpoint import CHECKPOINT_NAME

        return f"s3://{path}/{CHECKPOINT_NAME}" if self.storage is not None else f"{path}/{CHECKPOINT_NAME}"


def export_credentials(settings: S3Settings | None) -> None:
    """Explicit S3 keys (the embedded SeaweedFS) go to this process's AWS environment, never into
    the pyarrow filesystem object: Ray pickles RunConfig, filesystem included, into the bucket
    (Tune's tuner.pkl). From the environment the AWS chain finds them here and in the Ray
    workers of a local Ray started afterwards; cluster nodes use their own chain (IAM roles)."""
    if settings is not None and settings.access_key:
        os.environ["AWS_ACCESS_KEY_ID"] = settings.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = settings.secret_key or ""


def init_ray(num_cpus: int | None = None, storage: S3Settings | None = None) -> None:
    """Connect to $RAY_ADDRESS if set, else start a local Ray (its dashboard serves the State API
    that Ray Train polls; it binds 127.0.0.1). `storage` credentials are exported first, so the
    local workers inherit them."""
    apply_library_defaults()  # before Ray starts: its processes inherit this environment
    export_credentials(storage)
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address)
        ray.init(address=address, log_to_driver=True)
    else:
        _start_local_ray(num_cpus)


def _start_local_ray(num_cpus: int | None) -> None:
    """A local Ray whose own processes find its State API by address. Ray Train's PlacementGroupCleaner
    asks the State API at address "auto", which scans the machine for Ray instances and fails
    ("Found multiple active Ray instances") when another Ray runs here. The address goes to the
    raylet's environment, which every worker inherits, and not to this process's: a later Ray in
    this process (a cluster) must not find a dead local one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = os.environ.get(STATE_API_ENV)
    os.environ[STATE_API_ENV] = f"http://127.0.0.1:{port}"
    try:
        ray.init(num_cpus=num_cpus, _temp_dir=os.environ.get("SIMSIAM_RAY_TMP", "/tmp/ray-simsiam"),
                 log_to_driver=True, include_dashboard=True, dashboard_port=port)
    finally:
        if before is None:
            os.environ.pop(STATE_API_ENV, None)
        else:
            os.environ[STATE_API_ENV] = before


def storage_filesystem(settings: S3Settings):
    """pyarrow filesystem on S3 for Ray's RunConfig (pyarrow ignores AWS_ENDPOINT_URL_S3), retried
    through outages of up to `settings.outage_budget_s` (`simsiam.ray.storage_fs`)."""
    from simsiam.ray.storage_fs import retrying_s3

    kwargs: dict[str, Any] = {"region": settings.region}
    if settings.endpoint_url:
        scheme, _, host = settings.endpoint_url.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    export_credentials(settings)  # keys from the environment, not pickled with the filesystem
    return retrying_s3(kwargs, settings.outage_budget_s)


def storage_kwargs(dist: RayWorkers) -> dict[str, Any]:
    """RunConfig storage arguments: `bucket/prefix` on S3 (no s3:// in this form), or a local path."""
    if dist.storage is not None:
        return {"storage_path": f"{dist.storage.bucket}/{dist.storage_prefix}",
                "storage_filesystem": storage_filesystem(dist.storage)}
    return {"storage_path": dist.local_storage} if dist.local_storage else {}


def run_config(name: str, dist: RayWorkers, callbacks: list | None = None) -> RunConfig:
    """Re-using `name` with the same storage resumes that run from its latest checkpoint."""
    return RunConfig(name=name, checkpoint_config=CheckpointConfig(num_to_keep=dist.num_to_keep),
                     failure_config=FailureConfig(max_failures=dist.max_failures), callbacks=callbacks,
                     **storage_kwargs(dist))


def connect(cfg: Config, dist: RayWorkers) -> None:
    """Connect to (or start) Ray, then fail in seconds, not hours: workers the cluster can never place,
    storage its nodes cannot reach (Ray's checkpoint storage, and the endpoint of the staged data)."""
    init_ray(storage=dist.storage)
    data_endpoint = None
    if cfg.data.source:
        data_endpoint = settings_from_env(cfg.storage.endpoint_url, state_path=dist.state_path).endpoint_url
    check_placeable(dist.workers, worker_resources(dist.cpus_per_worker, dist.gpus_per_worker))
    for endpoint in {dist.storage.endpoint_url if dist.storage else None, data_endpoint} - {None}:
        check_storage_reachable(endpoint)


def scaling_config(dist: RayWorkers) -> ScalingConfig:
    res = {"CPU": dist.cpus_per_worker}
    if dist.use_gpu:
        res["GPU"] = dist.gpus_per_worker
    return ScalingConfig(num_workers=dist.workers, use_gpu=dist.use_gpu, resources_per_worker=res,
                         placement_strategy=dist.placement_strategy)


def loop_config(cfg: Config, dist: RayWorkers, **extra: Any) -> dict:
    """What the workers get. Only non-secret values: Ray may persist this. Workers find S3 credentials
    in the AWS chain, or in the embedded server's state dir on this node. `extra` may carry
    `reporters`: the caller's own `Reporter`s, which every rank runs beside ours."""
    return {"cfg": cfg.to_dict(), "state_path": dist.state_path, "tracking_uri": dist.tracking_uri,
            "experiment": dist.experiment, **extra}
