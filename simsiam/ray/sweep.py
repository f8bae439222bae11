"""Ray Tune sweeps over SimSiam's fragile knobs (lr x batch, or any config key), with ASHA on a chosen
metric (the kNN monitor with labelled data, a label-free one without) and a collapse stopper. A one-worker
trial trains in the Tune trial's own process; a
data-parallel trial (several workers) follows the Ray Train V2 pattern: a Tune function that builds
and fits its own TorchTrainer (`Tuner(TorchTrainer)` is not supported in V2).

MLflow: one parent run for the sweep, one child run per trial (parent id passed explicitly).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import psutil
import ray
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from simsiam import metrics as M
from simsiam.config import Config, override_config, sweep_metric_for, validate_config
from simsiam.diagnostics import COLLAPSE_RATIO, is_collapsed
from simsiam.errors import SimSiamError
from simsiam.ray.cluster import RayWorkers, connect, loop_config, storage_kwargs
from simsiam.ray.worker import build_trainer, trial_loop
from simsiam.reporters import Reporter
from simsiam.results import SweepResult, TrainedRun
from simsiam.run_report import format_table

# A data-parallel trial's function only drives its TorchTrainer. It reserves no CPU, so that N one-CPU workers fill
# N cores (a fraction of a CPU per driver leaves a core short, and the trials then run one after another).
# A bundle needs some resource: a logical 256 MiB of memory (the driver's real RSS is larger).
TRIAL_DRIVER = {"cpu": 0, "memory": 256 * 2**20}
SPEC_KEY = "trial_name"  # a named trial's parameter in Tune's config
SWEEP_KEY = "simsiam.sweep_key"  # the parent run's tag: what the sweep computes (`_sweep_key`)
DRIVER_TAG = "simsiam.sweep_driver"  # host:pid of the process driving it
AWS_SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"}
log = logging.getLogger("simsiam.ray")


class CollapseStopper(tune.Stopper):
    """Ends a trial whose collapse ratio (`train/z_std_ratio`: z_std * sqrt(d)) is below `threshold` after
    `warmup_epochs`: a collapsed SimSiam never recovers, so its remaining epochs are wasted."""

    def __init__(self, threshold: float = COLLAPSE_RATIO, warmup_epochs: int = 1) -> None:
        self.threshold, self.warmup = threshold, warmup_epochs

    def __call__(self, trial_id: str, result: dict) -> bool:
        ratio = result.get(M.Z_STD_RATIO)
        return ratio is not None and result.get("epoch", 0) >= self.warmup and is_collapsed(ratio, self.threshold)

    def stop_all(self) -> bool:
        return False


def _trial(config: dict, base: dict, dist: RayWorkers) -> None:
    """One trial: a grid point (dotted key -> value), or a named spec (name, overrides, MLflow tags). A
    trial restarted by Tune (after a failure, or in a restored sweep) continues from its own checkpoint,
    in the same MLflow child run."""
    spec = base["specs"][config[SPEC_KEY]] if SPEC_KEY in config else None
    overrides = spec["overrides"] if spec else [f"{k}={v}" for k, v in config.items()]
    cfg = override_config(validate_config(base["cfg"]), overrides)
    trial_id = tune.get_context().get_trial_id()
    name, parent = (spec["name"] if spec else f"trial-{trial_id}"), base.get("parent_run_id")
    run = {"parent_run_id": parent, "run_name": name, "final_eval": base["final_eval"], "reporters": base["reporters"]}
    if parent:  # the child run exists (with its tags) before the workers start
        from simsiam.tracking import child_run

        run["run_id"] = child_run(dist.tracking_uri, dist.experiment, name, parent, spec and spec.get("tags"))
    if dist.workers == 1:
        trial_loop(loop_config(cfg, dist, **run), dist.use_gpu)
    else:  # the same TorchTrainer name on a restart: it resumes from its latest checkpoint
        build_trainer(cfg, dist, f"{base['name']}-{trial_id}", [TuneReportCallback()], **run).fit()


def _trial_resources(dist: RayWorkers) -> dict[str, float]:
    """A one-worker trial trains in its own process and holds its worker's CPU (or GPU); a
    data-parallel trial's TorchTrainer places its workers itself."""
    if dist.workers > 1:
        return TRIAL_DRIVER
    return {"cpu": dist.cpus_per_worker, **({"gpu": dist.gpus_per_worker} if dist.use_gpu else {})}


def _trial_run_config(dist: RayWorkers) -> dict[str, Any]:
    """Tune restarts a failed trial (`max_failures`); kept checkpoints are Tune's to manage where the
    trial itself trains (as `run_config` sets them on a data-parallel trial's TorchTrainer)."""
    failures = {"failure_config": tune.FailureConfig(max_failures=dist.max_failures)}
    if dist.workers > 1:
        return failures
    return {**failures, "checkpoint_config": tune.CheckpointConfig(num_to_keep=dist.num_to_keep)}


def _keep_keys_out_of_ray_logs() -> None:
    """Tune copies the driver's AWS keys into every trial actor's runtime_env, which Ray's runtime-env
    agent writes to its session log (and its dashboard shows). Trials find the keys as every Ray worker
    does instead: in their node's environment (a local Ray inherits ours) or its own chain (IAM roles)."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - AWS_SECRETS


def run_sweep(cfg: Config, space: dict[str, list], dist: RayWorkers, samples: int = 1, name: str | None = None,
              collapse_threshold: float = COLLAPSE_RATIO, grace_period: int = 1,
              max_concurrent: int | None = None, early_stop: bool = True, parent_tags: dict[str, str] | None = None,
              final_eval: bool = False, reporters: Sequence[Reporter] = (), metric: str | None = None) -> SweepResult:
    """Grid over `space` (dotted config keys -> values, e.g. {"optim.base_lr": [...], "train.batch_size": [...]};
    or {"spec": [{"name", "overrides", "tags"}, ...]} for a list of named trials), repeated `samples` times;
    lr follows base_lr x batch/256 through the config. `early_stop=False` runs every trial to its end
    (no ASHA, collapse recorded but not stopped). `final_eval`: each trial ends with the evaluation
    after training (`probe/top1` and `knn/final_top1` in its row). `reporters` run in every trial.
    `metric` (a key of `simsiam.metrics.OBJECTIVES`; default `simsiam.config.sweep_metric_for`'s) drives
    ASHA and picks the best trial."""
    connect(cfg, dist)
    _keep_keys_out_of_ray_logs()
    # ASHA needs its metric in every report; reports happen at epoch ends only.
    metric = sweep_metric_for(cfg, metric)
    monitors = [f"eval.knn_every_epochs={int(cfg.has_eval_data)}",
                f"eval.label_free_every_epochs={int(metric in M.LABEL_FREE)}"]
    cfg = override_config(cfg, [*monitors, "train.checkpoint_every_steps=null"])
    key = _sweep_key(cfg, space, [samples, metric, early_stop, final_eval, grace_period, collapse_threshold], dist)
    found, parent = interrupted_sweep(dist, key) if name is None else (None, None)
    name = found or name or f"sweep-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    if dist.tracking_uri and parent is None:
        parent = _parent_run(dist, name, {"simsiam.sweep_metric": metric, SWEEP_KEY: key, **(parent_tags or {})})
    specs = {spec["name"]: spec for spec in space.get("spec", [])}
    # Named trials go to Tune by name: its live table shows the name, not a truncated dict.
    grid = {SPEC_KEY: list(specs)} if specs else space
    base = {"cfg": cfg.to_dict(), "name": name, "specs": specs, "parent_run_id": parent, "final_eval": final_eval,
            "reporters": list(reporters)}
    trainable = tune.with_resources(tune.with_parameters(_trial, base=base, dist=dist), _trial_resources(dist))
    tuner = _restored(trainable, dist, name) if found else None
    resumed = tuner is not None
    tuner = tuner or tune.Tuner(
        trainable,
        param_space={k: tune.grid_search(list(v)) for k, v in grid.items()},
        tune_config=tune.TuneConfig(metric=metric, mode=M.OBJECTIVES[metric], num_samples=samples,
                                    scheduler=_asha(cfg.train.epochs, grace_period) if early_stop else None,
                                    max_concurrent_trials=max_concurrent or _fitting_trials(dist),
                                    # a new trial process imports torch and ours again: reuse the process
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=name, stop=CollapseStopper(collapse_threshold) if early_stop else None,
                                  verbose=1, **storage_kwargs(dist), **_trial_run_config(dist)),
    )
    results = list(tuner.fit())
    rows = [_row(res, cfg, space, collapse_threshold, metric) for res in results]
    if parent:
        _close_sweep_runs(dist, parent, rows, metric, resumed)
    # A TorchTrainer's run directory is named after the trial; Tune keeps its own trials' in the sweep's.
    where = dist.storage_uri and f"{dist.storage_uri}/{name}{'/' if dist.workers == 1 else '-'}<trial>"
    return SweepResult(name, rows, parent, _best(rows, name, dist, metric), where,
                       {row["name"]: _curve(res, metric) for row, res in zip(rows, results)}, metric, resumed)


def _parent_run(dist: RayWorkers, name: str, tags: dict[str, str]) -> str:
    """The sweep's MLflow parent run; its tags say what it computes, so a dead driver's sweep is found."""
    from simsiam.tracking import create_run

    return create_run(dist.tracking_uri, dist.experiment, name,
                      tags={"simsiam.sweep": "true", "simsiam.sweep_name": name, DRIVER_TAG: _driver(), **tags})


def _sweep_key(cfg: Config, space: dict, settings: list, dist: RayWorkers) -> str:
    """What a sweep computes: the same command gives the same key, so its interrupted sweep is found."""
    import hashlib
    import json

    what = [cfg.config_hash(), space, settings, dist.workers, dist.storage_uri]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def interrupted_sweep(dist: RayWorkers, key: str) -> tuple[str | None, str | None]:
    """(name, parent run id) of the last sweep with this key whose parent run is still RUNNING and
    whose driver is gone. A driver on this machine that still lives is refused in one line; one on
    another machine cannot be asked, and is taken for dead. Untracked sweeps are not found."""
    if not dist.tracking_uri:
        return None, None
    from mlflow import MlflowClient

    client = MlflowClient(dist.tracking_uri)
    exp = client.get_experiment_by_name(dist.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`{SWEEP_KEY}` = '{key}' and attributes.status = 'RUNNING'",
                              order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    if not runs or "simsiam.sweep_name" not in runs[0].data.tags:
        return None, None
    tags = runs[0].data.tags
    host, _, pid = tags.get(DRIVER_TAG, "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and psutil.pid_exists(int(pid)) and int(pid) != os.getpid():
        raise SimSiamError(f"sweep {tags['simsiam.sweep_name']} (the same grid) is running in process {pid}: "
                           "wait for it, or stop it to resume it with this command")
    client.set_tag(runs[0].info.run_id, DRIVER_TAG, _driver())
    return tags["simsiam.sweep_name"], runs[0].info.run_id


def _driver() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _restored(trainable, dist: RayWorkers, name: str):
    """The interrupted sweep's Tuner from its storage: finished trials kept, unfinished and errored ones
    continued from their checkpoints. None when its storage holds no Tune state."""
    kwargs = storage_kwargs(dist)
    root = kwargs.get("storage_path") or str(Path("~/ray_results").expanduser())
    path, fs = f"{root.rstrip('/')}/{name}", kwargs.get("storage_filesystem")
    if not tune.Tuner.can_restore(path, storage_filesystem=fs):
        return None
    log.warning("resuming sweep %s from %s: finished trials are kept, the others continue", name, path)
    return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=fs)


def _best(rows: list[dict[str, Any]], sweep: str, dist: RayWorkers, metric: str) -> TrainedRun | None:
    """The healthy trial with the best `objective` (its metric's best over the epochs), as the steps
    know a trained run."""
    ok = [r for r in rows if not r["collapsed"] and r["objective"] is not None and r["checkpoint"]]
    if not ok:
        return None
    best = (max if M.OBJECTIVES[metric] == "max" else min)(ok, key=lambda r: r["objective"])
    return TrainedRun(checkpoint=dist.checkpoint_uri(best["checkpoint"]), collapsed=False, run_id=best["run_id"],
                      epochs=best["stopped_at_epoch"], metrics=M.pick(best, M.TRAINING),
                      where={"sweep": sweep, "trial": best["trial"]})


def _asha(epochs: int, grace_period: int) -> ASHAScheduler:
    return ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=min(grace_period, epochs),
                         reduction_factor=2)


def _curve(res, metric: str) -> list[dict[str, float]]:
    """The trial's epoch-end reports: epoch, loss, collapse ratio, kNN monitor or the sweep's metric."""
    df = res.metrics_dataframe
    if df is None:
        return []
    if "final_eval" in df:  # the report after training repeats the last epoch's values
        df = df[df["final_eval"].isna()]
    cols = [c for c in dict.fromkeys(("epoch", M.LOSS, M.Z_STD_RATIO, M.KNN_MONITOR, metric)) if c in df]
    return [{k: float(v) for k, v in rec.items()} for rec in df[cols].dropna().to_dict("records")]


def _last_checkpoint(res) -> str | None:
    """Where the trial's last checkpoint is, as Ray stores it (bucket/key on S3, else a local path):
    Tune's own, or the last that a TorchTrainer reported (its path in the report's metrics)."""
    if res.checkpoint is not None:
        return res.checkpoint.path
    df = res.metrics_dataframe
    paths = df[CHECKPOINT_PATH_KEY].dropna() if df is not None and CHECKPOINT_PATH_KEY in df else []
    return str(paths.iloc[-1]) if len(paths) else None


def _fitting_trials(dist: RayWorkers) -> int:
    """How many trials the free CPUs (or GPUs) hold at once."""
    per_trial = dist.workers * (dist.gpus_per_worker if dist.use_gpu else dist.cpus_per_worker)
    return max(1, int(ray.available_resources().get("GPU" if dist.use_gpu else "CPU", 1) // per_trial))


def _objective(df, metric: str) -> float | None:
    """The trial's best value of `metric` over its epoch-end reports."""
    values = df[metric].dropna() if df is not None and metric in df else []
    if not len(values):
        return None
    return float(values.max() if M.OBJECTIVES[metric] == "max" else values.min())


def _row(res, cfg: Config, space: dict[str, list], threshold: float, metric: str) -> dict[str, Any]:
    """One trial as a table row: its grid values, effective lr, its best value of the sweep's metric
    (`objective`), best kNN, label-free metrics, collapse and why it stopped."""
    df = res.metrics_dataframe
    knn = df[M.KNN_MONITOR].dropna() if df is not None and M.KNN_MONITOR in df else []
    last = res.metrics or {}
    ratio = last.get(M.Z_STD_RATIO)
    collapsed = ratio is not None and is_collapsed(ratio, threshold)
    stopped_at = int(last.get("epoch", 0))
    early = stopped_at < cfg.train.epochs
    trial = last.get("trial_id") or (res.path.rstrip("/").split("/")[-1] if res.path else "?")
    spec_name = res.config.get(SPEC_KEY)
    grid = {"trial": trial, "name": spec_name} if spec_name else {
        "trial": trial, "name": f"trial-{trial}", **{k: res.config.get(k) for k in space}}
    return {
        **grid,
        "lr": res.config.get("optim.base_lr", cfg.optim.base_lr)
        * res.config.get("train.batch_size", cfg.train.batch_size) / 256,
        "objective": _objective(df, metric),
        M.KNN_MONITOR_BEST: float(max(knn)) if len(knn) else None,
        M.KNN_MONITOR: float(knn.iloc[-1]) if len(knn) else None,
        M.KNN_FINAL: last.get(M.KNN_FINAL),
        M.PROBE: last.get(M.PROBE),
        M.LOSS: last.get(M.LOSS),
        M.Z_STD_RATIO: ratio,
        **{k: last.get(k) for k in M.LABEL_FREE},
        "collapsed": collapsed,
        "stopped_at_epoch": stopped_at,
        "stopped_by": "collapse" if collapsed and early else "asha" if early else "completed",
        "time_s": last.get("time_total_s"),  # Tune's wall time for the trial, start-up included
        "pid": last.get("pid"),  # the trial's process: trials reuse one (reuse_actors)
        "checkpoint": _last_checkpoint(res),
        "error": repr(res.error)[:200] if res.error else None,
        "run_id": None,  # its MLflow child run, filled in when the sweep is tracked
    }


def _close_sweep_runs(dist: RayWorkers, parent: str, rows: list[dict], metric: str, resumed: bool) -> None:
    """Children of trials that Tune stopped are still RUNNING: end them, tag collapse, log the table;
    each row gets its child run's id. A restored sweep's parent says so (`simsiam.sweep_resumed`)."""
    from mlflow import MlflowClient

    from simsiam.tracking import child_runs
    from simsiam.tracking.figures import sweep_heatmap

    client = MlflowClient(dist.tracking_uri)
    by_name = {r["name"]: r for r in rows}
    for run in child_runs(dist.tracking_uri, parent):
        row = by_name.get(run.data.tags.get("mlflow.runName", run.info.run_name or ""))
        if row is not None:
            row["run_id"] = run.info.run_id
            client.set_tag(run.info.run_id, "simsiam.collapsed", str(row["collapsed"]).lower())
            client.set_tag(run.info.run_id, "simsiam.stopped_at_epoch", str(row["stopped_at_epoch"]))
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
    if resumed:
        client.set_tag(parent, "simsiam.sweep_resumed", "true")
    client.log_text(parent, format_table(rows), "sweep_results.md")
    if (fig := sweep_heatmap(rows, metric)) is not None:
        client.log_figure(parent, fig, "figures/sweep_heatmap.png")
    best = [r["objective"] for r in rows if r["objective"] is not None and not r["collapsed"]]
    if best:
        client.log_metric(parent, M.sweep_best(metric), (max if M.OBJECTIVES[metric] == "max" else min)(best))
    client.set_terminated(parent, "FINISHED")
