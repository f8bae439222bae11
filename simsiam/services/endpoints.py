"""Which servers a run talks to: the ones the user names (an argument, the environment, the config),
or else the embedded ones of the state dir, started (or reused) here."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from simsiam.errors import ConfigError, TrackingError
from simsiam.redact import redact

# MLflow's stores: a server (http/https), a local directory (file:) or a database (SQLAlchemy URI).
_URI_SCHEMES = re.compile(r"^(https?://[^\s/]+|file:|(sqlite|postgresql|mysql|mssql)(\+\w+)?://|databricks)")


def check_tracking_uri(uri: str, where: str = "--tracking-uri") -> str:
    local_path = uri.startswith(("/", "./", "../", "~")) or ":" not in uri  # MLflow's file store
    if re.search(r"\s", uri) or not (_URI_SCHEMES.match(uri) or local_path):
        raise ConfigError(f"{where} {redact(uri)!r} is not an MLflow tracking URI: expected http(s)://host:port, "
                          "file:/path or a database URI such as sqlite:///mlflow.db")
    return uri


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


def tracking_server(state: str | Path | None, uri: str | None = None) -> str:
    """The tracking URI: `uri` or $MLFLOW_TRACKING_URI, which must answer now (a dead server is a
    clear error before any work, not after an hour of training); else the embedded MLflow server,
    started (which starts the embedded S3 too: it keeps the artifacts there)."""
    from simsiam.services.mlflow_server import start_mlflow

    if uri or os.environ.get("MLFLOW_TRACKING_URI"):
        uri = check_tracking_uri(uri) if uri else \
            check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI")
        check_server(uri)
        return uri
    return start_mlflow(state).tracking_uri


def object_store(state: str | Path | None, endpoint_url: str | None) -> None:
    """Start the embedded SeaweedFS unless an S3 endpoint is named (the config's, or the environment's)."""
    from simsiam.services.s3 import start_s3
    from simsiam.storage.client import s3_endpoint

    if not s3_endpoint(endpoint_url):
        start_s3(state)
