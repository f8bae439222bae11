"""Prefect tasks around `simsiam.steps`. I/O steps retry with a delay; staging is cached across
runs on the dataset source and its content version (INPUTS + TASK_SOURCE, persisted results)."""

from __future__ import annotations

from datetime import timedelta

from prefect import task
from prefect.cache_policies import INPUTS, NONE, TASK_SOURCE

from simsiam import steps
from simsiam.config import Config
from simsiam.errors import ConfigError, DataError

NOT_TRANSIENT = (ConfigError, DataError, TypeError, ValueError, KeyError, AttributeError, MemoryError)


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: I/O failures (connections, S3, the tracking server, services), not bad input or
    bugs, so a corrupt checkpoint or a wrong config key fails at once instead of repeating a long step."""
    return not isinstance(exc, NOT_TRANSIENT)


def _transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failed attempt's exception, re-raised by result()
        return is_transient(exc)
    return True


IO_RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_transient)


@task(task_run_name="version-{split}", cache_policy=NONE)
def source_version(cfg: Config, split: str, subset: int | None) -> str:
    return steps.dataset_version(cfg, split, subset)


@task(task_run_name="stage-{split}", cache_policy=(INPUTS - "cfg" - "state" - "progress") + TASK_SOURCE,
      persist_result=True, cache_expiration=timedelta(days=365), **IO_RETRIES)
def stage_split(cfg: Config, split: str, subset: int | None, version: str, where: str, name: str | None = None,
                state: str | None = None, progress: bool = False) -> dict:
    """Upload one split. Cache key: split, subset, the source's content version (which covers the
    dataset files and shard size), the target store and dataset name; not the rest of the config."""
    return steps.stage(cfg, split, name, subset, state, progress)


@task(task_run_name="check-staged-{split}", cache_policy=NONE, **IO_RETRIES)
def check_staged(cfg: Config, staged: dict, split: str, state: str | None) -> bool:
    return steps.is_staged(cfg, staged, state)


@task(task_run_name="train-{run_name}", cache_policy=NONE)
def train_encoder(cfg: Config, out: str, tracking_uri: str | None, run_name: str, state: str | None,
                  workers: int = 0, gpus_per_worker: float = 0.0, progress: bool = False, resume: bool = False,
                  previous: dict | None = None) -> dict:
    # No retries: a failed multi-hour run is worth a look, and Ray already restarts its workers.
    ray = steps.RayWorkers(workers, gpus_per_worker) if workers > 0 else None
    return steps.pretrain(cfg, out, tracking_uri=tracking_uri, run_name=run_name, state=state, progress=progress,
                          ray=ray, resume=resume, previous=previous)


@task(task_run_name="ray-tune-sweep", cache_policy=NONE)
def sweep_trials(cfg: Config, space: dict, tracking_uri: str | None, state: str | None, ray: steps.RayWorkers,
                 max_concurrent: int | None) -> dict:
    return steps.sweep(cfg, space, ray=ray, max_concurrent=max_concurrent, tracking_uri=tracking_uri, state=state)


@task(task_run_name="evaluate", cache_policy=NONE, **IO_RETRIES)
def evaluate_encoder(cfg: Config, checkpoint: str | None, model_uri: str | None, tracking_uri: str | None,
                     run_id: str | None, state: str | None) -> dict:
    return steps.evaluate(cfg, checkpoint, model_uri, tracking_uri, run_id, state)


@task(task_run_name="embed", cache_policy=NONE, **IO_RETRIES)
def embed_dataset(cfg: Config, model_uri: str, data: str, tracking_uri: str, state: str | None) -> dict:
    return steps.embed(cfg, model_uri, data, tracking_uri, state, progress=False)


@task(task_run_name="register", cache_policy=NONE, **IO_RETRIES)
def register_encoder(cfg: Config, run_id: str, checkpoint: str, probe_top1: float, collapsed: bool,
                     tracking_uri: str, state: str | None, eval_set: dict[str, str] | None = None) -> dict:
    return steps.register(cfg, run_id, checkpoint, probe_top1, collapsed, tracking_uri, state, eval_set)
