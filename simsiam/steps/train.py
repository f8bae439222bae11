"""Training steps: pretrain one encoder (in this process, or data-parallel on Ray Train) and sweep a
grid of configs on Ray Tune. Both hand the trained run on as a `TrainedRun`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from simsiam import metrics as M
from simsiam.results import SweepResult, TrainedRun
from simsiam.steps import resume as R
from simsiam.steps.context import RunContext

if TYPE_CHECKING:
    from simsiam.ray import RayWorkers
    from simsiam.reporters import Reporter


def pretrain(ctx: RunContext, out: str | Path | None = None, resume: bool = False,
             workers: RayWorkers | None = None, reporters: Sequence[Reporter] = ()) -> TrainedRun:
    """Pretrain in this process, or on Ray Train workers when `workers` is given; logged to MLflow
    when the context tracks (models are logged at registration). `out`: the run directory
    (`simsiam pretrain --out`, continued with `resume`); without it, the pipeline's directory for
    this config, continued when an interrupted attempt left it (`simsiam.steps.resume`).
    `reporters`: the caller's own, run first, on every rank."""
    n = workers.workers if workers is not None else 0
    attempt = R.in_dir(Path(out), resume, n > 0) if out else R.for_config(ctx.state / "runs", ctx.cfg, n)
    run_id = R.begin(attempt, ctx.cfg, ctx.tracking_uri, ctx.flow_runs)
    try:
        if n:
            from simsiam.ray import pretrain_distributed

            run = pretrain_distributed(ctx.cfg, on_ray(ctx, workers), attempt.out.name, run_id, reporters)
        else:
            run = _here(ctx, attempt, run_id, reporters)
    except Exception:  # e.g. bad data before the first step: the run must not stay RUNNING
        if run_id:
            from simsiam.tracking import end_run

            end_run(ctx.tracking_uri, run_id, "FAILED")
        raise
    if run.run_id:
        from simsiam.tracking import run_url

        run.run_url = run_url(ctx.tracking_uri, run.run_id)
    R.finish(attempt.out, {**run.to_dict(), **run.metrics})
    return run


def _here(ctx: RunContext, attempt: R.Attempt, run_id: str | None, reporters: Sequence[Reporter]) -> TrainedRun:
    from simsiam.engine import train
    from simsiam.reporters import JsonlReporter, ProgressReporter
    from simsiam.storage import eval_sources, open_sources

    cfg, out = ctx.cfg, attempt.out
    judged_on = eval_sources(cfg, store=ctx.store if cfg.eval.source else None) if cfg.eval.knn_every_epochs else None
    train_src, test_src = open_sources(cfg, need_test=cfg.eval.knn_every_epochs > 0 and judged_on is None,
                                       store=ctx.store if cfg.data.source else None)
    mine, tracker = [JsonlReporter(out / "metrics.jsonl"), ProgressReporter(ctx.progress)], None
    if run_id:
        from simsiam.tracking import MlflowReporter, dataset_info

        tracker = MlflowReporter(ctx.tracking_uri, cfg.tracking.experiment, run_id=run_id,
                                 dataset=dataset_info(cfg, train_src), flush_every=cfg.tracking.flush_every_steps,
                                 system_metrics=cfg.tracking.system_metrics, unsent_path=out / "metrics-unsent.jsonl")
        mine.append(tracker)
    try:
        result = train(cfg, [*reporters, *mine], out_dir=out, resume=attempt.resume, train_source=train_src,
                       test_source=test_src, eval_sources=judged_on)
    except BaseException:
        if tracker is not None:
            tracker.finish("FAILED")
        raise
    if tracker is not None:
        tracker.finish()
    last = {**result.last_metrics, M.KNN_MONITOR: result.knn_last, M.KNN_MONITOR_BEST: result.knn_best,
            **result.label_free}
    return TrainedRun(checkpoint=str(result.checkpoint.resolve()), collapsed=result.collapsed, run_id=run_id,
                      steps=result.step, epochs=result.epoch, resumed_from_step=result.start_step,
                      wall_s=round(result.wall_s, 1), metrics=M.pick(last, M.TRAINING))


def on_ray(ctx: RunContext, workers: RayWorkers) -> RayWorkers:
    """`workers` with where their checkpoints go and what they log to, from the context."""
    storage = None if workers.local_storage else ctx.store.settings
    return replace(workers, storage=storage, state_path=str(ctx.state), tracking_uri=ctx.tracking_uri,
                   experiment=ctx.cfg.tracking.experiment)


def sweep(ctx: RunContext, space: dict[str, list], workers: RayWorkers | None = None, samples: int = 1,
          max_concurrent: int | None = None, collapse_threshold: float | None = None,
          reporters: Sequence[Reporter] = (), metric: str | None = None) -> SweepResult:
    """Ray Tune over `space` with ASHA on `metric` (default: the kNN monitor with labelled data,
    `eval.label_free_judge` without) and the collapse stopper; `best` is the best healthy trial by
    that metric, a `TrainedRun` as `pretrain` returns. `workers`: per trial (default one worker, a failed
    trial restarted twice from its own checkpoint). `collapse_threshold` defaults to the collapse rule of
    `simsiam.diagnostics`."""
    from simsiam.config import sweep_metric_for
    from simsiam.diagnostics import COLLAPSE_RATIO
    from simsiam.ray import RayWorkers, run_sweep

    res = run_sweep(ctx.cfg, space, on_ray(ctx, workers or RayWorkers()), samples=samples,
                    max_concurrent=max_concurrent, reporters=reporters, metric=sweep_metric_for(ctx.cfg, metric),
                    collapse_threshold=COLLAPSE_RATIO if collapse_threshold is None else collapse_threshold)
    if res.best is not None and res.best.run_id:
        from simsiam.tracking import run_url

        res.best.run_url = run_url(ctx.tracking_uri, res.best.run_id)
    return res
