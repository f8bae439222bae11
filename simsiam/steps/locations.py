"""Where the steps find the services and keep their runs: a given URI or environment wins, else the
embedded servers of the state dir."""

from __future__ import annotations

import os
import re
from pathlib import Path

from simsiam.errors import ConfigError
from simsiam.redact import redact

# MLflow's stores: a server (http/https), a local directory (file:) or a database (SQLAlchemy URI).
_URI_SCHEMES = re.compile(r"^(https?://[^\s/]+|file:|(sqlite|postgresql|mysql|mssql)(\+\w+)?://|databricks)")


def check_tracking_uri(uri: str, where: str = "--tracking-uri") -> str:
    local_path = uri.startswith(("/", "./", "../", "~")) or ":" not in uri  # MLflow's file store
    if re.search(r"\s", uri) or not (_URI_SCHEMES.match(uri) or local_path):
        raise ConfigError(f"{where} {redact(uri)!r} is not an MLflow tracking URI: expected http(s)://host:port, "
                          "file:/path or a database URI such as sqlite:///mlflow.db")
    return uri


def tracking_uri(uri: str | None = None, state: str | Path | None = None) -> str:
    """The given URI, $MLFLOW_TRACKING_URI, or the embedded MLflow server (started if needed)."""
    if uri:
        return check_tracking_uri(uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI")
    from simsiam.services import start_mlflow

    return start_mlflow(state).tracking_uri


def run_dir(state: str | Path | None, name: str) -> Path:
    """Where an in-process run named `name` keeps config.yaml, metrics.jsonl and checkpoint.pt."""
    from simsiam.services import state_dir

    return state_dir(state) / "runs" / name
