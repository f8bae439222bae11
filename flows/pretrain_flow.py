"""Flow `pretrain`: SimSiam pretraining on staged data, in-process or on Ray Train workers."""

from __future__ import annotations

from prefect import flow

from flows import tasks
from flows.common import DEFAULT_PRESET, open_context, ray_workers, resolve_config, run_name
from simsiam.config import Config
from simsiam.results import TrainedRun


@flow(name="pretrain", flow_run_name=run_name("pretrain"), log_prints=True)
def pretrain(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
             name: str | None = None, workers: int = 0, gpus_per_worker: float = 0.0, track: bool = True,
             mlflow_uri: str | None = None, state: str | None = None) -> TrainedRun:
    """Pretrain a SimSiam encoder (logged to MLflow when `track`). Set `data.source` /
    `data.test_source` to staged versions (the pipeline does), or train on local files.

    Args:
        workers: Ray Train workers (DDP); 0 trains in this process.
        gpus_per_worker: GPUs per Ray worker (0 = CPU).
        name: run name (run directory, MLflow run, Ray run). Default: one per config and data
            (`<preset>-<config hash>`), so re-running an interrupted flow resumes its training.
    """
    ctx = open_context(resolve_config(preset, overrides, config), state, mlflow_uri, track)
    out = ctx.state / "runs" / name if name else None
    return tasks.pretrain(ctx, out=out, workers=ray_workers(workers, gpus_per_worker))
