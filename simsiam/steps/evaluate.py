"""Evaluation and registry steps: a trained model from its checkpoint location, the evaluation after
training (kNN + linear probe of its frozen backbone), and registration with the champion gate."""

from __future__ import annotations

import time
from pathlib import Path

from simsiam import metrics as M
from simsiam.config import Config
from simsiam.errors import SimSiamError
from simsiam.results import Evaluation, Registration, TrainedRun
from simsiam.steps.context import RunContext


def read_checkpoint(location: str | Path, ctx: RunContext | None = None) -> dict:
    """A checkpoint dict from a local file or run directory, or an `s3://bucket/key` URI (read
    through the context's store; another bucket on the same endpoint is opened for it)."""
    from simsiam.checkpoint import checkpoint_from_bytes, load_checkpoint

    location = str(location)
    if not location.startswith("s3://"):
        return load_checkpoint(location)
    if ctx is None:
        raise SimSiamError(f"reading {location} needs the object store: open a run context first")
    bucket, _, key = location[len("s3://"):].partition("/")
    return checkpoint_from_bytes(ctx.bucket(bucket).get_bytes(key), location)


def evaluate(ctx: RunContext, checkpoint: str | None = None, model_uri: str | None = None, run_id: str | None = None,
             random_init: bool = False, loaded: dict | None = None) -> Evaluation:
    """The evaluation after training on the context config's data: a checkpoint (`random_init`: its
    architecture untrained, the baseline) or a registered model (`models:/name@champion`). With
    `run_id`, the metrics, the eval set and the figures go to that MLflow run. `loaded`: the
    checkpoint's contents, when the entry point already read them."""
    from simsiam.checkpoint import model_from_checkpoint
    from simsiam.evaluation import evaluate_after_training
    from simsiam.runtime import resolve_device, seed_everything
    from simsiam.storage import evaluation_sources

    if (checkpoint is None) == (model_uri is None):
        raise SimSiamError("evaluate needs exactly one of a checkpoint or a model URI")
    cfg, model, trained_cfg, step = ctx.cfg, None, None, None
    seed_everything(cfg.train.seed)  # before a model is built: a random init is then reproducible
    if model_uri is not None:
        from simsiam.tracking import load_registered_net

        backbone = load_registered_net(model_uri, ctx.tracking_uri)[0]
    else:
        ckpt = loaded if loaded is not None else read_checkpoint(checkpoint, ctx)
        model, trained_cfg = model_from_checkpoint(ckpt, checkpoint, weights=not random_init)
        backbone, step = model.backbone, 0 if random_init else ckpt["step"]  # untrained: 0 steps, whatever the file
    device = resolve_device(cfg.train.device)
    train_src, test_src = evaluation_sources(cfg, store=ctx.store if cfg.data.source or cfg.eval.source else None)
    t0, kept = time.perf_counter(), {}
    metrics, measured_on = evaluate_after_training(backbone, cfg, train_src, test_src, device, keep=kept)
    if run_id and ctx.tracking_uri:
        from simsiam.tracking import log_metrics_to_run
        from simsiam.tracking.eval_figures import log_evaluation_figures

        log_metrics_to_run(ctx.tracking_uri, run_id, metrics, tags=measured_on)
        log_evaluation_figures(ctx.tracking_uri, run_id, kept, test_src, cfg if checkpoint else None, device)
    return Evaluation(metrics=metrics, eval_set=measured_on, train_images=int(measured_on["eval.train_images"]),
                      test_images=len(test_src), eval_s=round(time.perf_counter() - t0, 1), checkpoint=checkpoint,
                      model_uri=model_uri, step=step, random_init=random_init, model=model, model_config=trained_cfg)


def log_models(ctx: RunContext, trained: TrainedRun, evaluation: Evaluation | None = None) -> tuple[dict, Config]:
    """The trained `backbone` and `encoder` logged into the run (once: a retry reuses them); returns
    their model URIs and the config the checkpoint was trained with (a sweep trial's may differ
    from the context's). The model comes from `evaluation` when it read the checkpoint already."""
    from simsiam.checkpoint import model_from_checkpoint
    from simsiam.tracking import log_models_to_run

    if evaluation is not None and evaluation.model is not None:
        model, trained_cfg = evaluation.model, evaluation.model_config
    else:
        model, trained_cfg = model_from_checkpoint(read_checkpoint(trained.checkpoint, ctx), trained.checkpoint)
    return log_models_to_run(ctx.tracking_uri, trained.run_id, model, trained_cfg), trained_cfg


def register(ctx: RunContext, trained: TrainedRun, evaluation: Evaluation | None) -> Registration:
    """Log the trained models into the run, register the backbone and run the champion gate on the
    probe and the set it was measured on; without an evaluation (no labelled data) the version is
    registered and not promoted. Safe to retry: models already logged and a version already
    registered are reused."""
    from simsiam.tracking import model_version_url, register_and_gate, registered_name

    if not trained.run_id:
        raise SimSiamError("registering needs the MLflow run of the training (track it)")
    uris, trained_cfg = log_models(ctx, trained, evaluation)
    name = registered_name(trained_cfg)
    gate = register_and_gate(ctx.mlflow, trained.run_id, uris["backbone"], name,
                             evaluation.metrics[M.PROBE] if evaluation else None, trained.collapsed,
                             ctx.cfg.tracking.promote_floor, evaluation.eval_set if evaluation else None)
    return Registration(**gate, model_uri=uris["backbone"], alias_uri=f"models:/{name}@{gate['decision']}",
                        url=model_version_url(ctx.tracking_uri, name, gate["version"]))
