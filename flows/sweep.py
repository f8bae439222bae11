"""Flow `sweep`: Ray Tune lr x batch sweep with ASHA and the collapse stopper; a table artifact."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from flows.common import DEFAULT_PRESET, resolve_config, run_name
from flows.report import trial_table
from simsiam.config import Config
from simsiam.jobs import tracking_uri


@task(task_run_name="ray-tune-sweep", cache_policy=NONE)
def run_trials(cfg: Config, space: dict, uri: str | None, state: str | None, workers_per_trial: int,
               gpus_per_worker: float, cpus_per_worker: float, max_concurrent: int | None) -> dict:
    from simsiam import jobs
    from simsiam.sweep import run_sweep

    dist = jobs.dist_settings(cfg, workers_per_trial, gpus_per_worker, cpus_per_worker, 0, uri, state)
    res = run_sweep(cfg, space, dist, max_concurrent=max_concurrent)
    best = res.best
    out = {"name": res.name, "parent_run_id": res.parent_run_id, "rows": res.rows, "best": best,
           "checkpoint": None, "run_id": None}
    if best is not None:
        prefix = f"{dist.storage_prefix}/{res.name}-{best['trial']}/"
        out["checkpoint"] = jobs.latest_checkpoint(cfg, prefix, state)
        if uri and res.parent_run_id:
            from mlflow import MlflowClient

            client = MlflowClient(uri)
            exp = client.get_run(res.parent_run_id).info.experiment_id
            runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{res.parent_run_id}' and "
                                             f"tags.mlflow.runName = 'trial-{best['trial']}'")
            out["run_id"] = runs[0].info.run_id if runs else None
    return out


@flow(name="sweep", flow_run_name=run_name("sweep"), log_prints=True)
def sweep(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
          lr: list[float] | None = None, batch: list[int] | None = None, grid: dict[str, list] | None = None,
          workers_per_trial: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
          max_concurrent: int | None = None, track: bool = True, mlflow_uri: str | None = None,
          state: str | None = None) -> dict:
    """Sweep base lr x batch size (lr = base x batch/256) and any `grid` axes (dotted config keys),
    ASHA on knn/top1, collapsed trials stopped. Publishes the trial table as an artifact.

    Args:
        lr: optim.base_lr values (default: the preset's value x 0.5, 1, 2).
        batch: train.batch_size values (default: the preset's).
        grid: extra axes, e.g. {"loss.stop_grad": [true, false]}.
        max_concurrent: trials at once (default: as many as free CPUs/GPUs allow).
    """
    cfg = resolve_config(preset, overrides, config)
    base = cfg.optim.base_lr
    space = {"optim.base_lr": list(lr or [base / 2, base, base * 2]),
             "train.batch_size": list(batch or [cfg.train.batch_size]), **(grid or {})}
    uri = tracking_uri(mlflow_uri, state) if track else None
    out = run_trials(cfg, space, uri, state, workers_per_trial, gpus_per_worker, cpus_per_worker, max_concurrent)
    create_table_artifact(key="simsiam-sweep-trials", table=trial_table(out["rows"]),
                          description=f"sweep {out['name']}: one row per trial (ASHA on knn/top1, collapse stopper)")
    return out
