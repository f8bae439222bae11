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
    architecture untrained, the baseline) or a registered model (`models:/name@champion`): the
    label-free metrics on their sample of the training images, and the kNN and linear probe when
    labelled data exists. With `run_id`, the metrics, what they were measured on and the figures go
    to that MLflow run. `loaded`: the checkpoint's contents, when the entry point already read them."""
    from simsiam.checkpoint import model_from_checkpoint
    from simsiam.evaluation import evaluate_after_training
    from simsiam.label_free import label_free_after_training
    from simsiam.runtime import resolve_device, seed_everything

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
    device, t0, kept = resolve_device(cfg.train.device), time.perf_counter(), {}
    labelled, training = _sources(ctx)
    metrics, free_set = label_free_after_training(backbone, cfg, training, device, keep=kept)
    measured_on = None
    if labelled is not None:
        probed, measured_on = evaluate_after_training(backbone, cfg, *labelled, device, keep=kept)
        metrics = {**probed, **metrics}
    test_src = labelled[1] if labelled else None
    if run_id and ctx.tracking_uri:
        from simsiam.tracking import log_metrics_to_run
        from simsiam.tracking.eval_figures import log_evaluation_figures

        log_metrics_to_run(ctx.tracking_uri, run_id, metrics, step=step or 0,  # at the step the weights are of
                           tags={**(measured_on or {}), **free_set})
        log_evaluation_figures(ctx.tracking_uri, run_id, kept, test_src, cfg if checkpoint else None, device)
    return Evaluation(metrics=metrics, eval_set=measured_on, label_free_set=free_set,
                      train_images=int(measured_on["eval.train_images"]) if measured_on else None,
                      test_images=len(test_src) if test_src is not None else None,
                      eval_s=round(time.perf_counter() - t0, 1), checkpoint=checkpoint, model_uri=model_uri,
                      step=step, random_init=random_init, model=model, model_config=trained_cfg)


def _sources(ctx: RunContext):
    """(the labelled (train, test) splits, or None without labelled data; the training data, whose
    fixed sample the label-free metrics measure on), each opened once."""
    from simsiam.storage import evaluation_sources, open_sources

    cfg = ctx.cfg
    labelled = evaluation_sources(cfg, store=ctx.store if cfg.data.source or cfg.eval.source else None) \
        if cfg.has_eval_data else None
    if labelled is not None and not (cfg.eval.dataset or cfg.eval.source):  # the training data's own splits
        return labelled, labelled[0]
    return labelled, open_sources(cfg, need_test=False, store=ctx.store if cfg.data.source else None)[0]


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
    probe and the set it was measured on, or without labelled data on the label-free metric
    `eval.label_free_judge` (a label-free champion measured on other images is measured again on
    this run's sample first). Collapsed: the training's verdict, or features whose collapse ratio is
    below the same threshold. Without an evaluation the version is registered and not promoted.
    Safe to retry: models already logged and a version already registered are reused."""
    from simsiam.diagnostics import COLLAPSE_RATIO
    from simsiam.tracking import model_version_url, register_and_gate, registered_name

    if not trained.run_id:
        raise SimSiamError("registering needs the MLflow run of the training (track it)")
    uris, trained_cfg = log_models(ctx, trained, evaluation)
    name = registered_name(trained_cfg)
    free = M.pick(evaluation.metrics, M.LABEL_FREE) if evaluation else {}
    collapsed = trained.collapsed or free.get(M.FEATURE_STD_RATIO, 1.0) < COLLAPSE_RATIO
    again = _champion_on_this_sample(ctx, name, trained, evaluation) if free and M.PROBE not in evaluation.metrics \
        else None
    gate = register_and_gate(ctx.mlflow, trained.run_id, uris["backbone"], name,
                             evaluation.metrics.get(M.PROBE) if evaluation else None, collapsed,
                             ctx.cfg.tracking.promote_floor, evaluation.eval_set if evaluation else None,
                             free, evaluation.label_free_set if evaluation else None, ctx.cfg.eval.label_free_judge,
                             again)
    return Registration(**gate, model_uri=uris["backbone"], alias_uri=f"models:/{name}@{gate['decision']}",
                        url=model_version_url(ctx.tracking_uri, name, gate["version"]))


def _champion_on_this_sample(ctx: RunContext, name: str, trained: TrainedRun, evaluation: Evaluation) -> dict | None:
    """The label-free champion's metrics on this run's sample, when its own were measured on other
    images (a collection that grew, another reading of it): the gate compares values of the same
    images only. None when there is nothing to measure again."""
    from simsiam.label_free import label_free_after_training
    from simsiam.runtime import resolve_device
    from simsiam.storage import open_sources
    from simsiam.tracking.logged_models import load_registered_net
    from simsiam.tracking.registry import champion

    champ = champion(ctx.mlflow, name)
    ours = evaluation.label_free_set.get("label_free.set")
    if champ is None or champ.run_id == trained.run_id or champ.tags.get("gate.criterion") not in M.LABEL_FREE \
            or champ.tags.get("label_free.set") == ours:
        return None
    backbone = load_registered_net(f"models:/{name}/{champ.version}", ctx.tracking_uri)[0]
    training = open_sources(ctx.cfg, need_test=False, store=ctx.store if ctx.cfg.data.source else None)[0]
    metrics, tags = label_free_after_training(backbone, ctx.cfg, training, resolve_device(ctx.cfg.train.device))
    return {"version": champ.version, "metrics": metrics, **tags}
