"""MLflow adapter: a training `Reporter` that logs a run (params, metrics, system metrics, config,
figures), models logged into runs, and a registry gate that promotes an encoder only when it is
better.

  runs.py             server health, runs created up front (Ray), metrics into existing runs, child runs, URLs
  mlflow_reporter.py  MlflowReporter: the run of one training, with buffered metrics that survive an outage
  figures.py          the run's figures (collapse diagnostic, loss, kNN curve)
  logged_models.py    backbone/encoder logged into a run (idempotent), registered models loaded back
  onnx_export.py      a logged network as ONNX, checked against torch; onnx_parity.py: that check's tag
  served_model.py     the registered pyfunc: the ONNX graph on onnxruntime behind the input check
  registry.py         registration, the champion/challenger gate, manual promotion, listing (no torch)

MLflow's HTTP retries and printing are set by `simsiam.library_env`, applied by each entry point.
"""

from importlib import import_module

from simsiam.errors import TrackingError

# Names are imported on first use (PEP 562): listing the registry must not import torch, which the
# model modules need.
_WHERE = {
    # its `logged_models` function is imported from the module: the package attribute is the module
    "logged_models": ("load_registered", "load_registered_net", "log_models_to_run", "registered_version"),
    "mlflow_reporter": ("MlflowReporter", "dataset_info"),
    "registry": ("CHALLENGER", "CHAMPION", "list_models", "promote", "register_and_gate", "registered_name"),
    "runs": ("check_server", "child_run", "child_runs", "create_run", "end_run", "kill_if_running",
             "log_files_to_run", "log_metrics_to_run", "model_version_url", "run_url", "tag_existing_run"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = ["TrackingError", *sorted(_MODULE_OF)]


def __getattr__(name: str):
    if name in _WHERE:  # a submodule not imported yet
        return import_module(f"{__name__}.{name}")
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF, *_WHERE})
