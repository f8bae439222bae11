"""The pipeline's Prefect tasks: the `simsiam.steps` functions themselves, wrapped by `task()`. Steps
safe to repeat (staging resumes, registration reuses what it made) retry on I/O failures; training
does not: Ray restarts its workers, and re-running the pipeline resumes an in-process run."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from simsiam import steps
from simsiam.errors import ConfigError, DataError

NOT_TRANSIENT = (ConfigError, DataError, TypeError, ValueError, KeyError, AttributeError, MemoryError)


def _transient(task, task_run, state) -> bool:
    """Worth a retry: I/O failures (connections, S3, the tracking server, services), not bad input or
    bugs, so a corrupt checkpoint or a wrong config key fails at once instead of repeating a long step."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failed attempt's exception, re-raised by result()
        return not isinstance(exc, NOT_TRANSIENT)
    return True


# Steps here are idempotent by content (a staged version or embedding is found, not redone), so no
# Prefect cache: a cached result could outlive the data it points to.
ONCE = dict(cache_policy=NONE)
RETRIED = dict(ONCE, retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_transient)

stage = task(steps.stage, task_run_name=lambda parameters: f"stage-{'eval-' * (parameters.get('of') == 'eval')}"
                                                          f"{parameters['split']}", **RETRIED)
pretrain = task(steps.pretrain, task_run_name="train-{ctx.cfg.name}", **ONCE)
sweep = task(steps.sweep, task_run_name="ray-tune-sweep", **ONCE)
evaluate = task(steps.evaluate, task_run_name="evaluate", **RETRIED)
register = task(steps.register, task_run_name="register", **RETRIED)
embed = task(steps.embed, task_run_name="embed", **RETRIED)
reproduce = task(steps.reproduce, task_run_name="reproduce-{suite}", **ONCE)
