"""Settings of the libraries we drive that only travel by environment variable. Each entry point
applies them once, before it calls a library: the CLI's `main`, every Prefect flow, `init_ray`
(Ray's workers inherit them) and the test session. Nothing sets them on import. A value the user
has set wins."""

from __future__ import annotations

import os

LIBRARY_DEFAULTS = {
    # boto3 >= 1.36 sends CRC checksums that non-AWS servers may reject: only when required. Our own
    # clients also say so in their botocore Config; this covers the ones MLflow and others make.
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    # Fail fast on an unreachable tracking server instead of MLflow's default of minutes of retries.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # We print the run URL in our own JSON summary; keep stdout machine-readable.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    # On a small busy node a sweep's workers can wait for a free CPU longer than Ray's 60 s default.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
}


def apply_library_defaults() -> None:
    for key, value in LIBRARY_DEFAULTS.items():
        os.environ.setdefault(key, value)
