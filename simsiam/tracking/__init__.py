"""MLflow adapter: a training `Reporter` that logs a run (params, metrics, system metrics, config,
figures), models logged into runs, and a registry gate that promotes an encoder only when it is
better.

  runs.py             server health, runs created up front (Ray), metrics into existing runs, child runs, URLs
  mlflow_reporter.py  MlflowReporter: the run of one training, with buffered metrics that survive an outage
  figures.py          the run's figures (collapse diagnostic, loss, kNN curve)
  logged_models.py    backbone/encoder logged into a run (idempotent), registered models loaded back
  registry.py         registration, the champion/challenger gate, manual promotion, listing

MLflow's HTTP retries and printing are set by `simsiam.library_env`, applied by each entry point.
"""

from simsiam.errors import TrackingError
from simsiam.tracking.logged_models import (
    load_registered,
    load_registered_net,
    log_models_to_run,
    logged_models,
    registered_version,
)
from simsiam.tracking.mlflow_reporter import MlflowReporter, dataset_info
from simsiam.tracking.registry import CHALLENGER, CHAMPION, list_models, promote, register_and_gate, registered_name
from simsiam.tracking.runs import (
    check_server,
    child_run,
    child_runs,
    create_run,
    end_run,
    kill_if_running,
    log_files_to_run,
    log_metrics_to_run,
    model_version_url,
    run_url,
    tag_existing_run,
)

__all__ = ["CHALLENGER", "CHAMPION", "MlflowReporter", "TrackingError", "check_server", "child_run", "child_runs",
           "create_run", "dataset_info",
           "end_run", "kill_if_running", "list_models", "load_registered", "load_registered_net", "log_files_to_run",
           "log_metrics_to_run",
           "log_models_to_run", "logged_models", "model_version_url", "promote", "register_and_gate",
           "registered_name", "registered_version", "run_url", "tag_existing_run"]
