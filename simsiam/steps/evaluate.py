"""Evaluation and registry steps: a trained model from its checkpoint location, kNN + linear probe
of its frozen backbone, and registration with the champion gate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from simsiam import faults
from simsiam.config import Config, override_config, validate_config
from simsiam.errors import SimSiamError
from simsiam.steps.results import TrainedRun


def read_checkpoint(location: str | Path, state: str | Path | None = None, cfg: Config | None = None) -> dict:
    """A checkpoint dict from a local file or run directory, or an `s3://bucket/key` URI (read with
    `cfg.storage`'s endpoint)."""
    from simsiam.checkpoint import checkpoint_from_bytes, load_checkpoint

    location = str(location)
    if not location.startswith("s3://"):
        return load_checkpoint(location)
    from simsiam.storage import store_for

    bucket, _, key = location[len("s3://"):].partition("/")
    store = store_for(override_config(cfg or Config(), [f"storage.bucket={bucket}"]), state)
    return checkpoint_from_bytes(store.get_bytes(key), location)


def load_trained(location: str | Path, state: str | Path | None = None, cfg: Config | None = None):
    """(SimSiam model in eval mode, the config it was trained with, its step) from a checkpoint location."""
    from simsiam.checkpoint import model_from_checkpoint

    ckpt = read_checkpoint(location, state, cfg)
    model, trained_cfg = model_from_checkpoint(ckpt, location)
    return model, trained_cfg, ckpt["step"]


def _backbone(cfg: Config | None, checkpoint, model_uri, tracking_uri, state, random_init: bool, overrides,
              loaded: dict | None = None):
    """(backbone, config for data and eval, steps the backbone was trained: None for a model URI)."""
    from simsiam.checkpoint import model_from_checkpoint
    from simsiam.runtime import seed_everything

    if model_uri is not None:
        if cfg is None:
            raise SimSiamError("evaluating a model URI needs a config for its data (--preset)")
        cfg = override_config(cfg, overrides)
        seed_everything(cfg.train.seed)
        from simsiam.tracking import load_registered_net

        return load_registered_net(model_uri, tracking_uri)[0], cfg, None
    ckpt = read_checkpoint(checkpoint, state, cfg) if loaded is None else loaded
    cfg = override_config(cfg or validate_config(ckpt["config"]), overrides)
    seed_everything(cfg.train.seed)  # before the model is built: a random init is then reproducible
    model, _ = model_from_checkpoint(ckpt, checkpoint, weights=not random_init)
    return model.backbone, cfg, 0 if random_init else ckpt["step"]  # untrained: 0 steps, whatever the file holds


def _init_features(cfg: Config, train_src, device):
    """The kNN bank's features under the architecture at its init (same seed as training): the
    "before" of the embedding figure."""
    import torch

    from simsiam.evaluation import features_for
    from simsiam.models import build_model
    from simsiam.runtime import seed_everything
    from simsiam.tracking.eval_figures import BANK

    seed_everything(cfg.train.seed)
    init = build_model(cfg.model).backbone.to(device).eval()
    return features_for(init, cfg, train_src, torch.arange(min(BANK, len(train_src))), device)


def evaluate(cfg: Config | None, checkpoint: str | None = None, model_uri: str | None = None,
             tracking_uri: str | None = None, run_id: str | None = None, state: str | Path | None = None,
             random_init: bool = False, overrides: Sequence[str] = (), loaded: dict | None = None) -> dict[str, Any]:
    """kNN + linear probe of a frozen backbone on the full splits of the config's data: from a checkpoint
    (`random_init`: its architecture untrained, the baseline), or a registered/logged MLflow model
    (`models:/name@champion`). `cfg` None means the checkpoint's own config; `overrides` apply on top.
    With `run_id`, the metrics are logged to that run (`knn/final_top1`, `probe/top1`). `loaded`: the
    checkpoint's contents, when the caller already read it."""
    from simsiam.evaluation import as_final, eval_set, evaluate_backbone
    from simsiam.runtime import resolve_device
    from simsiam.storage import open_sources

    if (checkpoint is None) == (model_uri is None):
        raise SimSiamError("evaluate needs exactly one of a checkpoint or a model URI")
    faults.io_fault("evaluate")
    backbone, cfg, step = _backbone(cfg, checkpoint, model_uri, tracking_uri, state, random_init, overrides, loaded)
    device = resolve_device(cfg.train.device)
    train_src, test_src = open_sources(cfg, need_test=True, state=state, for_training=False)
    t0 = time.perf_counter()
    kept: dict = {}
    metrics = evaluate_backbone(backbone.to(device), cfg, train_src, test_src, device, keep=kept)
    measured_on = eval_set(cfg, train_src, test_src)
    if run_id and tracking_uri:
        from simsiam.tracking import log_metrics_to_run
        from simsiam.tracking.eval_figures import log_evaluation_figures

        log_metrics_to_run(tracking_uri, run_id, as_final(metrics), tags=measured_on)
        init = _init_features(cfg, train_src, device) if checkpoint is not None else None
        log_evaluation_figures(tracking_uri, run_id, kept, train_src, test_src, init)
    return {**metrics, "train_images": len(train_src), "test_images": len(test_src),
            "eval_s": round(time.perf_counter() - t0, 1), "checkpoint": checkpoint, "model_uri": model_uri,
            "step": step, "random_init": random_init, "eval_set": measured_on}


def log_models(cfg: Config, run_id: str, checkpoint: str, tracking_uri: str,
               state: str | Path | None = None) -> tuple[dict[str, str], Config]:
    """The trained `backbone` and `encoder` logged into the run (once: a retry reuses them); returns
    their model URIs and the config the checkpoint was trained with."""
    from simsiam.tracking import log_models_to_run

    model, trained_cfg, _ = load_trained(checkpoint, state, cfg)  # a sweep trial's config may differ from cfg
    return log_models_to_run(tracking_uri, run_id, model, trained_cfg), trained_cfg


def register(cfg: Config, run_id: str, checkpoint: str, probe_top1: float, collapsed: bool, tracking_uri: str,
             state: str | Path | None = None, eval_set: dict[str, str] | None = None) -> dict[str, Any]:
    """Log the trained models into the run, register the backbone and run the champion gate on the
    probe and the set it was measured on (`evaluate`'s `eval_set`). Safe to retry: models already
    logged and a version already registered are reused."""
    from mlflow import MlflowClient

    from simsiam.tracking import model_version_url, register_and_gate, registered_name

    uris, trained_cfg = log_models(cfg, run_id, checkpoint, tracking_uri, state)
    name = registered_name(trained_cfg)
    gate = register_and_gate(MlflowClient(tracking_uri), run_id, uris["backbone"], name, probe_top1, collapsed,
                             cfg.tracking.promote_floor, eval_set)
    return {**gate, "model_uri": uris["backbone"], "alias_uri": f"models:/{name}@{gate['decision']}",
            "url": model_version_url(tracking_uri, name, gate["version"])}


def evaluate_and_register(cfg: Config, trained: TrainedRun, tracking_uri: str, state: str | Path | None = None) -> dict:
    """evaluate + register for a tracked run (`pretrain`'s or `sweep`'s `trained`): the final metrics
    under their MLflow names, and the gate's decision under `registry` (None when the run has no
    MLflow run to register from)."""
    from simsiam.evaluation import as_final

    metrics = evaluate(cfg, checkpoint=trained.checkpoint, tracking_uri=tracking_uri, run_id=trained.run_id,
                       state=state)
    gate = None
    if trained.run_id:
        gate = register(cfg, trained.run_id, trained.checkpoint, metrics["probe/top1"], trained.collapsed,
                        tracking_uri, state, metrics["eval_set"])
    return {**{k: v for k, v in as_final(metrics).items() if "/" in k}, "registry": gate}
