"""Flow `sweep`: Ray Tune lr x batch sweep with ASHA and the collapse stopper; a table artifact."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows import tasks
from flows.common import DEFAULT_PRESET, open_context, ray_workers, resolve_config, run_name
from simsiam.config import Config, sweep_metric_for, sweep_space
from simsiam.results import SweepResult
from simsiam.run_report import trial_table


@flow(name="sweep", flow_run_name=run_name("sweep"), log_prints=True)
def sweep(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
          lr: list[float] | None = None, batch: list[int] | None = None, grid: dict[str, list] | None = None,
          workers_per_trial: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
          max_concurrent: int | None = None, track: bool = True, mlflow_uri: str | None = None,
          state: str | None = None, metric: str | None = None) -> SweepResult:
    """Sweep base lr x batch size (lr = base x batch/256) and any `grid` axes (dotted config keys),
    ASHA on `metric`, collapsed trials stopped. Publishes the trial table as an artifact.

    Args:
        lr: optim.base_lr values (default: the preset's value x 0.5, 1, 2).
        batch: train.batch_size values (default: the preset's).
        grid: extra axes, e.g. {"loss.stop_grad": [true, false]}.
        max_concurrent: trials at once (default: as many as free CPUs/GPUs allow).
        metric: what ranks the trials: a key of `simsiam.metrics.OBJECTIVES` (default `knn/top1` with
            labelled data, else `eval.label_free_judge`).
    """
    cfg = resolve_config(preset, overrides, config)
    space, metric = sweep_space(cfg, lr, batch, grid), sweep_metric_for(cfg, metric)  # fail before any service
    ctx = open_context(cfg, state, mlflow_uri, track)
    res = tasks.sweep(ctx, space, ray_workers(max(workers_per_trial, 1), gpus_per_worker, cpus_per_worker, 0),
                      max_concurrent=max_concurrent, metric=metric)
    create_table_artifact(key="simsiam-sweep-trials", table=trial_table(res.rows),
                          description=f"sweep {res.name}: one row per trial (ASHA on {metric}, collapse stopper)")
    return res
