"""The embedded tracking server: `mlflow server` on 127.0.0.1, runs in sqlite under the state dir
(or any SQLAlchemy URI), artifacts on the embedded S3, served through the server so clients need
no S3 credentials."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from simsiam.redact import redact
from simsiam.services.process import (
    http_ok,
    on_free_port,
    pid_alive,
    reuse_port,
    spawn_server,
    terminate,
    venv_binary,
)
from simsiam.services.s3 import start_s3
from simsiam.services.state import private_dir, read_record, state_dir, state_lock, write_record


@dataclass
class MlflowService:
    tracking_uri: str
    pid: int | None = None
    state: Path | None = None


def _running(info: dict) -> bool:
    return bool(info) and pid_alive(info.get("pid")) and http_ok(info["tracking_uri"] + "/health")


def mlflow_status(state_path: str | Path | None = None) -> dict:
    info = read_record(state_dir(state_path), "mlflow")
    return {"service": "mlflow", "running": _running(info), "tracking_uri": info.get("tracking_uri"),
            "pid": info.get("pid"), "backend_store_uri": info.get("backend_store_uri")}


def start_mlflow(state_path: str | Path | None = None, backend_store_uri: str | None = None,
                 artifacts_bucket: str = "mlflow", timeout: float = 90.0) -> MlflowService:
    """Start (or reuse) the server; starts (or restarts) the embedded S3 first, which keeps its
    artifacts. The S3 secret reaches the server only via its environment, never its command line
    or logs. Under the state dir's lock: concurrent starts make one server, migrate the database once."""
    state = state_dir(state_path)
    with state_lock(state):
        s3 = start_s3(state)
        info = read_record(state, "mlflow")
        if _running(info):
            if info.get("s3_endpoint_url") in (None, s3.endpoint_url):
                return MlflowService(info["tracking_uri"], info["pid"], state)
            terminate(info["pid"], 15.0)  # it talks to an S3 endpoint that is gone
        return _start_mlflow(state, s3, info, backend_store_uri, artifacts_bucket, timeout)


def _start_mlflow(state: Path, s3, info: dict, backend_store_uri: str | None, artifacts_bucket: str,
                  timeout: float) -> MlflowService:
    backend = backend_store_uri or f"sqlite:///{state / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url, "AWS_ACCESS_KEY_ID": s3.access_key,
           "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
           # job execution spawns helper processes (GBs of memory) that a local run does not need
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           # no usage data leaves a local server: the server sends none, tells the UI's telemetry worker
           # `disable_ui_telemetry` and drops what a browser posts. (MLflow 3.17's Home page still shows its
           # "Information about UI telemetry" banner: the UI hides it only by a per-browser localStorage
           # flag, set when the user closes it; no server setting reaches it.)
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    private_dir(state / "mlflow")

    def start(port: int):
        cmd = [venv_binary("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend, "--artifacts-destination", f"s3://{artifacts_bucket}/artifacts"]
        uri = f"http://127.0.0.1:{port}"
        return spawn_server("mlflow server", cmd, state, "mlflow.out", lambda: http_ok(uri + "/health"), uri,
                            timeout, env=env), port, uri

    proc, port, uri = on_free_port(start, reuse_port(info.get("port")))
    write_record(state, "mlflow", {"pid": proc.pid, "tracking_uri": uri, "port": port,
                                   "backend_store_uri": redact(backend), "s3_endpoint_url": s3.endpoint_url})
    return MlflowService(uri, proc.pid, state)


def stop_mlflow(state_path: str | Path | None = None, timeout: float = 15.0) -> bool:
    state = state_dir(state_path)
    with state_lock(state):  # the server runs uvicorn children in its own process group
        return terminate(read_record(state, "mlflow").get("pid"), timeout)
