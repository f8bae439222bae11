"""Flow `pretrain`: SimSiam pretraining on staged data, in-process or on Ray Train workers."""

from __future__ import annotations

from prefect import flow

from flows.common import DEFAULT_PRESET, crash_flow_runs, open_services, resolve_config, run_name
from flows.tasks import train_encoder
from simsiam.config import Config
from simsiam.steps import run_dir
from simsiam.steps.attempts import pick_attempt, record_attempt


@flow(name="pretrain", flow_run_name=run_name("pretrain"), log_prints=True)
def pretrain(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
             name: str | None = None, workers: int = 0, gpus_per_worker: float = 0.0, track: bool = True,
             mlflow_uri: str | None = None, state: str | None = None) -> dict:
    """Pretrain a SimSiam encoder (logged to MLflow when `track`). Set `data.source` /
    `data.test_source` to staged versions (the pipeline does), or train on local files.

    Args:
        workers: Ray Train workers (DDP); 0 trains in this process.
        gpus_per_worker: GPUs per Ray worker (0 = CPU).
        name: run name (run directory, MLflow run, Ray run). Default: one per config and data
            (`<preset>-<config hash>`), so re-running an interrupted pipeline resumes its training.
    """
    from prefect.runtime import flow_run

    cfg = resolve_config(preset, overrides, config)
    uri = open_services(cfg, state, mlflow_uri, track)
    shown = True  # a bar on a terminal, else a line every 30 s (ProgressReporter): a log must not go quiet
    if name:
        return train_encoder(cfg, str(run_dir(state, name)), uri, name, state, workers, gpus_per_worker, shown)
    attempt = pick_attempt(state, cfg, workers)
    mine = list(dict.fromkeys(str(i) for i in (flow_run.id, flow_run.root_flow_run_id) if i))
    dead = [i for i in (attempt.previous or {}).get("prefect_flow_runs", []) if i not in mine]  # not a retry of us
    if dead:
        crash_flow_runs(dead, f"process {attempt.previous.get('pid')} died; {flow_run.name} resumes {attempt.out.name}")
    record_attempt(attempt.out, prefect_flow_runs=mine)
    return train_encoder(cfg, str(attempt.out), uri, attempt.out.name, state, workers, gpus_per_worker, shown,
                         resume=attempt.resume and workers == 0, previous=attempt.previous)
