"""Where the steps find the services and keep their runs: a given URI or environment wins, else the
embedded servers of the state dir."""

from __future__ import annotations

import os
from pathlib import Path


def tracking_uri(uri: str | None = None, state: str | Path | None = None) -> str:
    """The given URI, $MLFLOW_TRACKING_URI, or the embedded MLflow server (started if needed)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    from simsiam.services import start_mlflow

    return start_mlflow(state).tracking_uri


def run_dir(state: str | Path | None, name: str) -> Path:
    """Where an in-process run named `name` keeps config.yaml, metrics.jsonl and checkpoint.pt."""
    from simsiam.services import state_dir

    return state_dir(state) / "runs" / name
