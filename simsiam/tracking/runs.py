"""Runs on a tracking server: health check, runs created up front so distributed workers (and their
restarts) log into one history, metrics logged into an existing run, child runs, UI links."""

from __future__ import annotations

import math
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunTag
from mlflow.exceptions import MlflowException

from simsiam.errors import SimSiamError
from simsiam.redact import redact


class TrackingError(SimSiamError):
    """The tracking server is unreachable, or a model/alias does not exist."""


def check_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless an HTTP tracking server answers /health (file/sqlite URIs pass)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(f"MLflow tracking server {redact(tracking_uri)} is unreachable ({exc}); "
                            "start it with `simsiam up` or set MLFLOW_TRACKING_URI") from None
    raise TrackingError(f"MLflow tracking server {redact(tracking_uri)} is not healthy")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def create_run(tracking_uri: str, experiment: str, run_name: str, parent_run_id: str | None = None,
               tags: dict[str, str] | None = None) -> str:
    check_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    MlflowClient(tracking_uri).set_terminated(run_id, status)


def tag_existing_run(tracking_uri: str, run_id: str, key: str, value: str) -> bool:
    """Tag a run; False when this server has no such run (another URI, a wiped database)."""
    try:
        MlflowClient(tracking_uri).set_tag(run_id, key, value)
        return True
    except MlflowException:
        return False


def kill_if_running(tracking_uri: str, run_id: str, reason: str) -> None:
    """A run a dead process left RUNNING: KILLED, with `simsiam.end_reason`; others are left alone."""
    client = MlflowClient(tracking_uri)
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "simsiam.end_reason", reason)
            client.set_terminated(run_id, "KILLED")
    except MlflowException:  # deleted, or another server: nothing to close
        pass


def log_metrics_to_run(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int = 0,
                       tags: dict[str, str] | None = None) -> None:
    now = int(time.time() * 1000)
    MlflowClient(tracking_uri).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()
                                                          if v is not None and math.isfinite(float(v))],
                                         tags=[RunTag(k, v) for k, v in (tags or {}).items()])


def child_runs(tracking_uri: str, parent_run_id: str, run_name: str | None = None) -> list[Run]:
    """The runs nested under `parent_run_id` (sweep trials), optionally only the one named `run_name`."""
    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    if run_name:
        query += f" and tags.mlflow.runName = '{run_name}'"
    return client.search_runs([exp_id], query)


def run_url(tracking_uri: str, run_id: str) -> str:
    run = MlflowClient(tracking_uri).get_run(run_id)
    return f"{tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def model_version_url(tracking_uri: str, name: str, version: str) -> str:
    return f"{tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"
