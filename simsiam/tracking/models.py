"""The trained networks as MLflow models: `backbone` (features for downstream use) and `encoder`
(backbone + projector), logged into a run once, and registered models loaded back as torch modules."""

from __future__ import annotations

import copy
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from simsiam.config import Config
from simsiam.tracking.runs import TrackingError, check_server

MODEL_NAMES = ("backbone", "encoder")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # simsiam/: the pickled modules' code travels with the model


def logged_models(tracking_uri: str, run_id: str) -> dict[str, str]:
    """{name: model URI} of the complete models already logged into a run."""
    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models([exp_id], filter_string=f"source_run_id = '{run_id}'")
    return {m.name: m.model_uri for m in found if m.status == LoggedModelStatus.READY}


def _log_models(model: torch.nn.Module, cfg: Config, names: list[str]) -> dict[str, str]:
    """Log `names` to the active run. Pickle format with a batch-2 example at the real input size
    (pt2 would freeze the shapes)."""
    from mlflow.models import infer_signature

    model = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    nets = {"backbone": model.backbone, "encoder": torch.nn.Sequential(model.backbone, model.projector)}
    example = torch.randn(2, cfg.model.in_channels, cfg.data.image_size, cfg.data.image_size)
    reqs = [f"torch=={torch.__version__.split('+')[0]}", "torchvision==0.29.1", "numpy"]
    uris = {}
    for name in names:
        with torch.no_grad():
            out = nets[name](example).numpy()
        info = mlflow.pytorch.log_model(nets[name], name=name, serialization_format="pickle",
                                        signature=infer_signature(example.numpy(), out),
                                        input_example=example.numpy().astype(np.float32),
                                        pip_requirements=reqs, code_paths=[str(PACKAGE_DIR)])
        uris[name] = info.model_uri
    return uris


def log_models_to_run(tracking_uri: str, run_id: str, model: torch.nn.Module, cfg: Config) -> dict[str, str]:
    """`backbone` and `encoder` in an existing (possibly finished) run; returns their model URIs.
    Idempotent: models a previous attempt logged completely are kept, not logged twice."""
    check_server(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)  # registration (mlflow.register_model) follows on the same server
    uris = logged_models(tracking_uri, run_id)
    missing = [n for n in MODEL_NAMES if n not in uris]
    if not missing:
        return uris
    client = MlflowClient(tracking_uri)
    info = client.get_run(run_id).info
    mlflow.set_experiment(experiment_id=info.experiment_id)  # start_run(run_id) insists they match
    try:
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            return {**uris, **_log_models(model, cfg, missing)}
    finally:
        # leaving start_run marks the run FINISHED (FAILED on an error); keep what it was, so a
        # retried attempt does not leave a successful run FAILED
        if info.status != "RUNNING":
            client.set_terminated(run_id, info.status)


def load_registered(uri: str):
    """`models:/<name>@<alias>` (or /<version>, or a logged model) as a torch module; a clear error when absent."""
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as exc:
        raise TrackingError(f"cannot load {uri}: {str(exc).splitlines()[0][:200]}") from None
