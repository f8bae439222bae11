"""MLflow adapter: a training `Reporter` that logs a run (params, metrics, system metrics, config,
figures), models logged into runs, and a registry gate that promotes an encoder only when it is
better.

  runs.py      server health, runs created up front (Ray), metrics into existing runs, child runs, URLs
  reporter.py  MlflowReporter: the run of one training, with buffered metrics that survive an outage
  figures.py   the run's figures (collapse diagnostic, loss, kNN curve)
  models.py    backbone/encoder logged into a run (idempotent), registered models loaded back
  registry.py  registration, the champion/challenger gate, manual promotion, listing
"""

import os

# Fail fast on an unreachable server instead of mlflow's default of minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# We print the run URL in our own JSON summary; keep stdout machine-readable.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from simsiam.tracking.models import (  # noqa: E402
    load_registered,
    load_registered_net,
    log_models_to_run,
    logged_models,
    registered_version,
)
from simsiam.tracking.registry import CHALLENGER, CHAMPION, list_models, promote, register_and_gate, registered_name  # noqa: E402
from simsiam.tracking.reporter import MlflowReporter  # noqa: E402
from simsiam.tracking.runs import (  # noqa: E402
                                       TrackingError,
                                       check_server,
                                       child_runs,
                                       create_run,
                                       end_run,
                                       kill_if_running,
                                       log_metrics_to_run,
                                       model_version_url,
                                       run_url,
                                       tag_existing_run,
)

__all__ = ["CHALLENGER", "CHAMPION", "MlflowReporter", "TrackingError", "check_server", "child_runs", "create_run",
           "end_run", "kill_if_running", "list_models", "load_registered", "load_registered_net", "log_metrics_to_run",
           "log_models_to_run", "logged_models", "model_version_url", "promote", "register_and_gate",
           "registered_name", "registered_version", "run_url", "tag_existing_run"]
