"""Training steps: pretrain one encoder (in this process, or data-parallel on Ray Train) and sweep a
grid of configs on Ray Tune. Both hand the trained run to the evaluate/register steps as a
`TrainedRun`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simsiam import faults
from simsiam.config import Config, load_config, override_config
from simsiam.errors import ConfigError, SimSiamError
from simsiam.steps.results import TrainedRun


@dataclass(frozen=True)
class RayWorkers:
    """Data-parallel Ray Train workers per run (or per sweep trial)."""

    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_failures: int = 2


def check_cluster(ray: RayWorkers | None) -> None:
    """With Ray workers and $RAY_ADDRESS set: that cluster answers (else one line, before any service)."""
    if ray is not None:
        from simsiam.ray.preflight import check_cluster_address

        check_cluster_address()


def resume_config(out: Path, overrides: list[str] | None = None) -> Config:
    """The config an interrupted run in `out` was started with (its source of truth when resumed)."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        raise SimSiamError(f"cannot resume: {path} not found")
    return load_config(path, overrides or [])


def pretrain(cfg: Config, out: str | Path, *, tracking_uri: str | None = None, run_name: str | None = None,
             state: str | Path | None = None, progress: bool = False, resume: bool = False,
             ray: RayWorkers | None = None, previous: dict[str, Any] | None = None) -> TrainedRun:
    """Pretrain in this process, or on Ray Train workers when `ray` is given. With a tracking URI the
    run is logged to MLflow (models are logged at registration, for both paths alike). `previous`:
    the record of an interrupted attempt on `out` (`attempts.pick_attempt`); its MLflow run is
    continued when training resumes, else marked KILLED."""
    from simsiam.steps.attempts import mark_finished, record_attempt

    out = Path(out)
    if ray is not None and resume:
        raise SimSiamError("--resume is for in-process runs; a Ray run resumes when restarted with the same --out name")
    check_cluster(ray)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # a resumed run keeps the config it started with (a mismatch is refused below)
        (out / "config.yaml").write_text(cfg.to_yaml())
    record_attempt(out, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    run_id = _mlflow_run(cfg, out, tracking_uri, run_name or out.name, previous, resume or ray is not None)
    try:
        run = _pretrain_on_ray(cfg, out, tracking_uri, state, ray, run_id) if ray is not None else \
            _pretrain_here(cfg, out, tracking_uri, run_id, state, progress, resume)
    except Exception:  # e.g. bad data before the first step: the run must not stay RUNNING
        if run_id:
            from simsiam.tracking import end_run

            end_run(tracking_uri, run_id, "FAILED")
        raise
    if tracking_uri and run.run_id:
        from simsiam.tracking import run_url

        run.run_url = run_url(tracking_uri, run.run_id)
    mark_finished(out, run.to_dict())
    return run


def _mlflow_run(cfg: Config, out: Path, tracking_uri: str | None, name: str, previous: dict[str, Any] | None,
                continues: bool) -> str | None:
    """The run this training logs to, recorded in the attempt before any step: the interrupted
    attempt's run when training continues from its checkpoint, else a new one."""
    if not tracking_uri:
        return None
    from simsiam.steps.attempts import close_dead_mlflow_run, record_attempt
    from simsiam.tracking import check_server, create_run, tag_existing_run

    check_server(tracking_uri)  # before any training: a dead server is a clear error now, not after an hour
    run_id = (previous or {}).get("mlflow_run_id") if continues else None
    note = f"process {(previous or {}).get('pid')} stopped before the end; continued from its last checkpoint"
    if run_id and not tag_existing_run(tracking_uri, run_id, "simsiam.interrupted", note):
        run_id = None  # that run is not on this server
    if not run_id:
        close_dead_mlflow_run(tracking_uri, previous, f"process {(previous or {}).get('pid')} died before its "
                                                      "first checkpoint; training restarted in a new run")
        run_id = create_run(tracking_uri, cfg.tracking.experiment, name)
    record_attempt(out, mlflow_run_id=run_id)
    return run_id


def _pretrain_here(cfg: Config, out: Path, tracking_uri: str | None, run_id: str | None, state, progress: bool,
                   resume: bool) -> TrainedRun:
    from simsiam.engine import train
    from simsiam.reporters import JsonlReporter, ProgressReporter
    from simsiam.storage import open_sources

    train_src, test_src = open_sources(cfg, need_test=cfg.eval.knn_every_epochs > 0, state=state)
    reporters, tracker = [JsonlReporter(out / "metrics.jsonl"), ProgressReporter(progress)], None
    if tracking_uri:
        from simsiam.tracking import MlflowReporter

        tracker = MlflowReporter(tracking_uri, cfg.tracking.experiment, run_id=run_id,
                                 dataset=_dataset_info(cfg, train_src), flush_every=cfg.tracking.flush_every_steps,
                                 system_metrics=cfg.tracking.system_metrics, unsent_path=out / "metrics-unsent.jsonl")
        reporters.append(tracker)
    try:
        result = train(cfg, reporters, out_dir=out, resume=resume, train_source=train_src, test_source=test_src,
                       injected=faults.from_env())
    except BaseException:
        if tracker is not None and tracker.run_id:
            tracker.finish("FAILED")
        raise
    if tracker is not None:
        tracker.finish()
    return TrainedRun(checkpoint=str(result.checkpoint.resolve()), collapsed=result.collapsed,
                      run_id=tracker.run_id if tracker else None, steps=result.step, epochs=result.epoch,
                      resumed_from_step=result.start_step, wall_s=round(result.wall_s, 1),
                      metrics={**result.last_metrics, "knn/top1": result.knn_last, "knn/best_top1": result.knn_best})


def _dataset_info(cfg: Config, source) -> dict:
    ref = getattr(source, "ref", None)
    if ref is not None:
        return {"name": ref.name, "version": ref.version, "uri": ref.uri, "manifest_uri": ref.manifest_uri}
    return {"name": cfg.data.dataset, "source": "local files", "samples": len(source)}


def dist_settings(cfg: Config, ray: RayWorkers, tracking_uri: str | None, state: str | Path | None):
    from simsiam.ray import DistSettings
    from simsiam.services import state_dir
    from simsiam.storage import settings_from_env

    storage = settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state)
    return DistSettings(num_workers=ray.workers, use_gpu=ray.gpus_per_worker > 0,
                        gpus_per_worker=ray.gpus_per_worker or 1.0, cpus_per_worker=ray.cpus_per_worker,
                        storage=storage, max_failures=ray.max_failures, tracking_uri=tracking_uri,
                        experiment=cfg.tracking.experiment, state_path=str(state_dir(state)))


def _pretrain_on_ray(cfg: Config, out: Path, tracking_uri: str | None, state, ray: RayWorkers,
                     run_id: str | None) -> TrainedRun:
    from simsiam.diagnostics import is_collapsed
    from simsiam.ray import pretrain_distributed

    res = pretrain_distributed(cfg, dist_settings(cfg, ray, tracking_uri, state), name=out.name, run_id=run_id)
    if res.error:
        raise SimSiamError(f"distributed training failed after {ray.max_failures} restarts: {res.error[:300]}")
    metrics = dict(res.metrics)
    ratio = metrics.get("train/z_std_ratio")
    return TrainedRun(checkpoint=f"s3://{res.checkpoint_path}/checkpoint.pt",
                      collapsed=ratio is not None and is_collapsed(ratio), run_id=res.run_id,
                      steps=int(metrics.pop("step", 0)), epochs=int(metrics.pop("epoch", 0)),
                      resumed_from_step=int(metrics.pop("start_step", 0)), metrics=metrics,
                      where={"ray_run": res.name, "workers": ray.workers})


def sweep_space(cfg: Config, lr: list[float] | None = None, batch: list[int] | None = None,
                grid: dict[str, list] | None = None) -> dict[str, list]:
    """The grid: base lr (default the preset's x 0.5, 1, 2) x batch (default the preset's) x `grid`
    axes. Every key and value is checked against the config before any trial starts."""
    base = cfg.optim.base_lr
    space = {"optim.base_lr": list(lr or [base / 2, base, base * 2]),
             "train.batch_size": list(batch or [cfg.train.batch_size]), **(grid or {})}
    for key, values in space.items():
        if not values:
            raise ConfigError(f"sweep axis {key} has no values")
        for v in values:
            override_config(cfg, [f"{key}={v}"])
    return space


def sweep(cfg: Config, space: dict[str, list], *, ray: RayWorkers = RayWorkers(max_failures=0), samples: int = 1,
          max_concurrent: int | None = None, collapse_threshold: float | None = None,
          tracking_uri: str | None = None, state: str | Path | None = None) -> dict[str, Any]:
    """Ray Tune over `space` with ASHA on knn/top1 and the collapse stopper. `trained` is the best
    non-collapsed trial, a `TrainedRun` as `pretrain` returns (None when no trial qualifies).
    `collapse_threshold` defaults to the collapse rule of `simsiam.diagnostics`."""
    from simsiam.diagnostics import COLLAPSE_RATIO
    from simsiam.ray import run_sweep

    if tracking_uri:
        from simsiam.tracking import check_server

        check_server(tracking_uri)  # before Ray starts: a dead server is a clear error now
    dist = dist_settings(cfg, ray, tracking_uri, state)
    res = run_sweep(cfg, space, dist, samples=samples, max_concurrent=max_concurrent,
                    collapse_threshold=COLLAPSE_RATIO if collapse_threshold is None else collapse_threshold)
    best = res.best
    trained = _best_trial(res, best, tracking_uri) if best and best["checkpoint"] else None
    return {"name": res.name, "parent_run_id": res.parent_run_id, "rows": res.rows, "best": best, "trained": trained,
            "checkpoints": res.checkpoints}


def _best_trial(res, best: dict, tracking_uri: str | None) -> TrainedRun:
    run_id = run_url = None
    if tracking_uri and res.parent_run_id:
        from simsiam.tracking import child_runs
        from simsiam.tracking import run_url as url_of

        runs = child_runs(tracking_uri, res.parent_run_id, f"trial-{best['trial']}")
        run_id = runs[0].info.run_id if runs else None
        run_url = url_of(tracking_uri, run_id) if run_id else None
    return TrainedRun(checkpoint=f"s3://{best['checkpoint']}/checkpoint.pt", collapsed=best["collapsed"],
                      run_id=run_id, run_url=run_url, epochs=best["stopped_at_epoch"],
                      metrics={"train/z_std_ratio": best["z_std_ratio"], "knn/best_top1": best["best_knn"]},
                      where={"sweep": res.name, "trial": best["trial"]})
