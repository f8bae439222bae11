"""Where the steps find the services and keep their runs: a given URI or environment wins, else the
embedded servers of the state dir."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Services:
    """What an entry point opened: the state dir whose embedded servers the steps look up, and the
    tracking URI every step of the run logs to (None: not tracked)."""

    state: Path
    tracking_uri: str | None


def open_services(state: str | Path | None = None, *, tracking: bool = True, tracking_uri: str | None = None,
                  s3: bool = True, s3_endpoint_url: str | None = None) -> Services:
    """Called once by each entry point (a CLI command, a flow, a benchmark), before any step: starts
    the embedded SeaweedFS unless an S3 endpoint is configured (`s3_endpoint_url`: the config's), and
    with `tracking` resolves the tracking URI (the given one, $MLFLOW_TRACKING_URI, or the embedded
    MLflow server, started). Nothing else starts a server: steps and adapters only look up what was
    opened here."""
    from simsiam.services import start_mlflow, start_s3, state_dir
    from simsiam.storage.client import s3_endpoint

    uri = None
    if tracking:
        uri = tracking_uri and check_tracking_uri(tracking_uri)
        if not uri and os.environ.get("MLFLOW_TRACKING_URI"):
            uri = check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI")
        uri = uri or start_mlflow(state).tracking_uri  # starts the embedded S3 too: MLflow keeps artifacts there
    if s3 and not s3_endpoint(s3_endpoint_url):
        start_s3(state)
    return Services(state_dir(state), uri)


def run_dir(state: str | Path | None, name: str) -> Path:
    """Where an in-process run named `name` keeps config.yaml, metrics.jsonl and checkpoint.pt."""
    from simsiam.services import state_dir

    return state_dir(state) / "runs" / name
