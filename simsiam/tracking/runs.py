"""Runs on a tracking server: runs created up front so distributed workers (and their
restarts) log into one history, metrics logged into an existing run, child runs, UI links."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunTag
from mlflow.exceptions import MlflowException

from simsiam.services.endpoints import check_server


@contextmanager
def tracking_uri_scope(tracking_uri: str | None) -> Iterator[None]:
    """MLflow's fluent API (start_run, log_model, register_model, download_artifacts) reads a
    process-wide tracking URI, which `mlflow.set_tracking_uri` also exports as $MLFLOW_TRACKING_URI to
    every child process. Set it for this block only, then put back what was there (None: keep it)."""
    if tracking_uri is None:
        yield
        return
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# MLflow 3 opens an experiment in its GenAI view (overview, traces) unless the UI's workflow switch says
# "Model training", and its runs table shows no metric columns until they are picked. The tag marks
# the experiment as model training for the UIs that read it; the shared view state (an experiment
# tag the UI loads for `?viewStateShareKey=<key>`) picks the columns; `experiment_url` opens both.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
RUNS_VIEW_KEY = "simsiam-metrics"
RUNS_TABLE_COLUMNS = ["attributes.`Models`", "metrics.`probe/top1`", "metrics.`knn/final_top1`",
                      "metrics.`train/z_std_ratio`", "metrics.`train/loss`"]
RUNS_VIEW = {f"mlflow.sharedViewState.{RUNS_VIEW_KEY}": json.dumps({"selectedColumns": RUNS_TABLE_COLUMNS})}


def ensure_experiment(tracking_uri: str, experiment: str) -> str:
    """The id of `experiment`, created if missing, with the tags that make MLflow's UI open it as a
    model-training experiment whose runs table shows probe, kNN and collapse columns (added to an
    existing experiment too; a kind chosen in the UI is kept)."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            return client.create_experiment(experiment, tags={**EXPERIMENT_KIND, **RUNS_VIEW})
        except MlflowException:  # created meanwhile by another process (Ray workers, sweep trials)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
    missing = {k: v for k, v in EXPERIMENT_KIND.items() if k not in exp.tags}
    missing.update({k: v for k, v in RUNS_VIEW.items() if exp.tags.get(k) != v})
    for key, value in missing.items():
        client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table in the classic (model training) view, with the metric columns."""
    return (f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}")


def create_run(tracking_uri: str, experiment: str, run_name: str, parent_run_id: str | None = None,
               tags: dict[str, str] | None = None) -> str:
    check_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp_id = ensure_experiment(tracking_uri, experiment)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id


def child_run(tracking_uri: str, experiment: str, run_name: str, parent_run_id: str,
              tags: dict[str, str] | None = None) -> str:
    """The child run named `run_name` under the parent: the existing one (a restarted trial continues
    its history), else a new one."""
    found = child_runs(tracking_uri, parent_run_id, run_name)
    return found[0].info.run_id if found else create_run(tracking_uri, experiment, run_name, parent_run_id, tags)


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


def log_files_to_run(tracking_uri: str, run_id: str, files: dict[str, str | None]) -> None:
    """Local files into the run's artifacts: {path: artifact directory, None for the top}."""
    client = MlflowClient(tracking_uri)
    for path, where in files.items():
        client.log_artifact(run_id, path, where)


def child_runs(tracking_uri: str, parent_run_id: str, run_name: str | None = None) -> list[Run]:
    """The runs nested under `parent_run_id` (sweep trials), optionally only the one named `run_name`."""
    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    if run_name:
        query += f" and tags.mlflow.runName = '{run_name}'"
    return client.search_runs([exp_id], query)


def run_url(tracking_uri: str, run_id: str) -> str:
    """The run's page in the classic (model training) view: its Overview with metrics and params, and
    the Model metrics and Artifacts tabs. MLflow 3.17's UI picks its view from `?workflowType=` in the
    page's own (hash) URL, else from the browser's last choice (localStorage, GenAI when none); it does
    not read the experiment's `mlflow.experimentKind` tag on a run page, so without the parameter a
    fresh browser opens the run among GenAI "Evaluation runs". The tabs keep the parameter; a tab's
    URL puts its name before it (`.../runs/<run_id>/artifacts?workflowType=machine_learning`)."""
    run = MlflowClient(tracking_uri).get_run(run_id)
    return (f"{tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning")


def model_version_url(tracking_uri: str, name: str, version: str) -> str:
    return f"{tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"
