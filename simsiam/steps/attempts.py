"""Which run directory a pipeline pretraining uses, so that re-running an interrupted pipeline (a
killed process, a preempted node, a Prefect retry) resumes it instead of starting over.

The rule for "the same run": the same preset name, the same config hash (the pipeline pins the
staged data version in the config, so: same config and same data) and the same number of Ray
workers. Its directory is `<state>/runs/<preset>-<hash10>[-rayN]`. A directory whose run finished
(`finished.json`) is not reused: the next identical pipeline trains again in `...-r2`, `-r3`, ...

`attempt.json` records the process working on the directory (pid, host) and what it opened (MLflow
run, Prefect flow runs), so that the next attempt can mark those as dead, with a reason, and refuse
to run while that process is still alive.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simsiam.config import Config
from simsiam.errors import SimSiamError
from simsiam.steps.locations import run_dir

ATTEMPT, FINISHED = "attempt.json", "finished.json"


@dataclass
class Attempt:
    out: Path
    resume: bool  # a checkpoint to continue from (in-process) or a Ray run name to restore
    previous: dict[str, Any] | None  # the interrupted attempt's record, if there was one


def run_key(cfg: Config, workers: int = 0) -> str:
    return f"{cfg.name}-{cfg.config_hash()[:10]}" + (f"-ray{workers}" if workers else "")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive_here(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname() or not record.get("pid") or record["pid"] == os.getpid():
        return False
    try:
        os.kill(record["pid"], 0)
    except OSError:
        return False
    return True


def pick_attempt(state: str | Path | None, cfg: Config, workers: int = 0) -> Attempt:
    """The directory for this config: its unfinished attempt (to resume), or a fresh one."""
    base = run_dir(state, run_key(cfg, workers))
    out, n = base, 1
    while (out / FINISHED).exists():
        n += 1
        out = base.with_name(f"{base.name}-r{n}")
    from simsiam.checkpoint import CHECKPOINT_NAME  # torch: not for a CLI call that only fails on its input

    previous = interrupted_attempt(out)
    resume = (out / CHECKPOINT_NAME).is_file() or bool(workers and previous)
    return Attempt(out, resume, previous)


def interrupted_attempt(out: Path) -> dict[str, Any] | None:
    """The record of the attempt that last worked on `out`, if any; refused while its process lives."""
    previous = _read(out / ATTEMPT)
    if previous and _alive_here(previous):
        raise SimSiamError(f"run {out.name} is in progress in process {previous['pid']} ({out}); "
                           "wait for it, or stop that process and re-run to resume")
    return previous


def record_attempt(out: Path, **fields: Any) -> None:
    """Merge `fields` into `attempt.json`, with this process's pid and host."""
    rec = {**(_read(out / ATTEMPT) or {}), "pid": os.getpid(), "host": socket.gethostname(), **fields}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{ATTEMPT}.tmp"
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, out / ATTEMPT)


def mark_finished(out: Path, summary: dict[str, Any]) -> None:
    keep = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool, type(None)))}
    (out / FINISHED).write_text(json.dumps({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **keep}))


def close_dead_mlflow_run(tracking_uri: str, previous: dict[str, Any] | None, reason: str) -> None:
    """Mark the interrupted attempt's MLflow run KILLED (with `simsiam.end_reason`) if still RUNNING."""
    if (previous or {}).get("mlflow_run_id"):
        from simsiam.tracking import kill_if_running

        kill_if_running(tracking_uri, previous["mlflow_run_id"], reason)
