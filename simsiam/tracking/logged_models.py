"""The trained networks as MLflow models: `backbone` (features for downstream use) and `encoder`
(backbone + projector), logged into a run once as pickle-free pyfuncs, and registered models
loaded back as torch modules by our code."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from simsiam.batch_augment import normalise
from simsiam.config import Config
from simsiam.errors import TrackingError
from simsiam.image_input import contract
from simsiam.tracking.net_files import part_of, read_net_files, write_net_files
from simsiam.tracking.onnx_parity import ONNX_PARITY
from simsiam.tracking.runs import check_server, tracking_uri_scope

MODEL_NAMES = ("backbone", "encoder")
SERVED_MODEL = Path(__file__).with_name("served_model.py")
IMAGE_INPUT = Path(__file__).resolve().parents[1] / "image_input.py"  # the input check travels with the model


def logged_models(tracking_uri: str, run_id: str) -> dict[str, str]:
    """{name: model URI} of the complete models already logged into a run."""
    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models([exp_id], filter_string=f"source_run_id = '{run_id}'")
    return {m.name: m.model_uri for m in found if m.status == LoggedModelStatus.READY}


def _signature(out_dim: int):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    # No input schema: the model checks its input itself (simsiam.image_input), with a one-line
    # message; MLflow's schema check would refuse first and print the whole array. The input example
    # and the model card show what to send.
    return ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out_dim))]))


def _log_models(model: torch.nn.Module, cfg: Config, names: list[str]) -> dict[str, str]:
    """Log `names` to the active run as pyfuncs from code (`served_model.py`) over an ONNX graph and
    plain weight files: nothing is pickled, `mlflow models serve` serves them, and loading one needs
    only onnxruntime. Each records its ONNX parity with torch (tag `onnx.max_abs_diff`)."""
    from simsiam.tracking.onnx_export import export_onnx

    model = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    channels, size = cfg.model.in_channels, cfg.data.image_size
    example = torch.rand(2, channels, size, size)  # what it checks
    reqs = [f"onnxruntime=={_version('onnxruntime')}", f"numpy=={np.__version__}"]  # what loading it needs
    uris = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            files = write_net_files(model, cfg, name, Path(tmp))
            files["onnx"] = str(Path(tmp) / f"{name}.onnx")
            diff = export_onnx(part_of(model, name), cfg.data.norm, channels, size, Path(files["onnx"]))
            with torch.no_grad():
                out_dim = part_of(model, name)(normalise(example, cfg.data.norm, channels)).shape[1]
            info = mlflow.pyfunc.log_model(name=name, python_model=str(SERVED_MODEL), artifacts=files,
                                           code_paths=[str(IMAGE_INPUT)], signature=_signature(out_dim),
                                           input_example=example.numpy(), pip_requirements=reqs,
                                           tags={ONNX_PARITY: f"{diff:.3g}"},
                                           metadata={"input": contract(channels, size), "onnx": f"{name}.onnx"})
            uris[name] = info.model_uri
    return uris


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # onnxruntime-gpu provides the same module
        return version(f"{package}-gpu")


def log_models_to_run(tracking_uri: str, run_id: str, model: torch.nn.Module, cfg: Config) -> dict[str, str]:
    """`backbone` and `encoder` in an existing (possibly finished) run; returns their model URIs.
    Idempotent: models a previous attempt logged completely are kept, not logged twice."""
    check_server(tracking_uri)
    uris = logged_models(tracking_uri, run_id)
    missing = [n for n in MODEL_NAMES if n not in uris]
    if not missing:
        return uris
    client = MlflowClient(tracking_uri)
    info = client.get_run(run_id).info
    try:
        with tracking_uri_scope(tracking_uri):
            mlflow.set_experiment(experiment_id=info.experiment_id)  # start_run(run_id) insists they match
            with mlflow.start_run(run_id=run_id, log_system_metrics=False):
                return {**uris, **_log_models(model, cfg, missing)}
    finally:
        # leaving start_run marks the run FINISHED (FAILED on an error); keep what it was, so a
        # retried attempt does not leave a successful run FAILED
        if info.status != "RUNNING":
            client.set_terminated(run_id, info.status)


def load_registered(uri: str, tracking_uri: str | None = None) -> torch.nn.Module:
    """`models:/<name>@<alias>` (or /<version>, or a logged model) as a torch module in eval mode,
    rebuilt by our code from its weight files (it takes normalised images); a clear error when absent.
    `tracking_uri`: the registry's server (default: MLflow's current one)."""
    return load_registered_net(uri, tracking_uri)[0]


def load_registered_net(uri: str, tracking_uri: str | None = None) -> tuple[torch.nn.Module, dict]:
    """(the network, its net.json: part, training config, input normalisation), from the registry at
    `tracking_uri` (default: MLflow's current one)."""
    from mlflow.models import Model

    try:
        with tracking_uri_scope(tracking_uri), tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            files = Model.load(local).flavors.get("python_function", {}).get("artifacts", {})
            if not {"weights", "net"} <= set(files):
                raise TrackingError(f"{uri} is not a simsiam model (no weights/net files): logged by another tool?")
            return read_net_files(local / files["weights"]["path"], local / files["net"]["path"])
    except MlflowException as exc:
        raise TrackingError(f"cannot load {uri}: {str(exc).splitlines()[0][:200]}") from None


def registered_version(uri: str, tracking_uri: str) -> tuple[str, str]:
    """(name, version) that `models:/<name>@<alias>` or `models:/<name>/<version>` points at now."""
    body = uri.removeprefix("models:/")
    name, alias = body.split("@", 1) if "@" in body else (body.rsplit("/", 1) + [""])[:2]
    if not uri.startswith("models:/") or not name or not alias:
        raise TrackingError(f"model {uri!r} must look like models:/<name>@<alias> or models:/<name>/<version>")
    client = MlflowClient(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if "@" in body else client.get_model_version(name, alias)
    except MlflowException as exc:
        raise TrackingError(f"cannot resolve {uri}: {str(exc).splitlines()[0][:200]}") from None
    return name, str(mv.version)
