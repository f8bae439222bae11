"""Flow `pretrain`: SimSiam pretraining on staged data, in-process or on Ray Train workers."""

from __future__ import annotations

from prefect import flow

from flows.common import DEFAULT_PRESET, progress, resolve_config, run_name
from flows.tasks import train_encoder
from simsiam.config import Config
from simsiam.steps import run_dir, tracking_uri


@flow(name="pretrain", flow_run_name=run_name("pretrain"), log_prints=True)
def pretrain(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
             name: str | None = None, workers: int = 0, gpus_per_worker: float = 0.0, track: bool = True,
             mlflow_uri: str | None = None, state: str | None = None) -> dict:
    """Pretrain a SimSiam encoder (logged to MLflow when `track`). Set `data.source` /
    `data.test_source` to staged versions (the pipeline does), or train on local files.

    Args:
        workers: Ray Train workers (DDP); 0 trains in this process.
        gpus_per_worker: GPUs per Ray worker (0 = CPU).
        name: run name (run directory, MLflow run, Ray run); default from the flow run.
    """
    from prefect.runtime import flow_run

    cfg = resolve_config(preset, overrides, config)
    name = name or flow_run.name or cfg.name
    uri = tracking_uri(mlflow_uri, state) if track else None
    return train_encoder(cfg, str(run_dir(state, name)), uri, name, state, workers, gpus_per_worker, progress())
