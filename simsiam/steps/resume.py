"""How an interrupted pretraining resumes, all in one place: the run directory and its attempt
record, the MLflow run that is continued, the dead attempt's Prefect flow runs marked Crashed, and
the Ray run restored by name. docs/pipeline.md ("Interrupted runs resume") tells the story.

In this process a run continues from its directory's `checkpoint.pt`; on Ray, Ray Train restores
the latest checkpoint of the run named after the directory (a `RunConfig` name reused with the
same storage), whenever an earlier attempt worked on the directory.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simsiam.config import Config, load_config
from simsiam.errors import SimSiamError

ATTEMPT, FINISHED = "attempt.json", "finished.json"
CHECKPOINT = "checkpoint.pt"  # simsiam.checkpoint.CHECKPOINT_NAME, named here without importing torch


@dataclass
class Attempt:
    out: Path
    resume: bool  # continue from a checkpoint: the directory's, or Ray's of the run named `out.name`
    previous: dict[str, Any] | None  # the interrupted attempt's record, if there was one


def run_key(cfg: Config, workers: int = 0) -> str:
    return f"{cfg.name}-{cfg.config_hash()[:10]}" + (f"-ray{workers}" if workers else "")


def for_config(runs: Path, cfg: Config, workers: int = 0) -> Attempt:
    """The pipeline's directory for this config under `runs`: its unfinished attempt, or a fresh one."""
    base = runs / run_key(cfg, workers)
    out, n = base, 1
    while (out / FINISHED).exists():
        n += 1
        out = base.with_name(f"{base.name}-r{n}")
    previous = interrupted_attempt(out)
    return Attempt(out, (out / CHECKPOINT).is_file() or bool(workers and previous), previous)


def in_dir(out: Path, resume: bool, ray: bool) -> Attempt:
    """`simsiam pretrain --out`: in this process it resumes with `--resume`; on Ray, whenever an
    earlier attempt worked on the directory (the command re-run after its driver was killed)."""
    if ray and resume:
        raise SimSiamError("--resume is for in-process runs; a Ray run resumes when restarted with the same --out")
    previous = interrupted_attempt(out)
    return Attempt(out, resume or bool(ray and previous), previous)


def resume_config(out: Path, overrides: list[str] | None = None) -> Config:
    """The config an interrupted run in `out` was started with (its source of truth when resumed)."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        raise SimSiamError(f"cannot resume: {path} not found")
    return load_config(path, overrides or [])


def interrupted_attempt(out: Path) -> dict[str, Any] | None:
    """The record of the attempt that last worked on `out`, if any; refused while its process lives."""
    previous = _read(out / ATTEMPT)
    if previous and _alive_here(previous):
        raise SimSiamError(f"run {out.name} is in progress in process {previous['pid']} ({out}); "
                           "wait for it, or stop that process and re-run to resume")
    return previous


def begin(attempt: Attempt, cfg: Config, tracking_uri: str | None, flow_runs: tuple[str, ...] = ()) -> str | None:
    """Take the directory over: record this process, mark the dead attempt's Prefect flow runs
    Crashed, and return the MLflow run to log to (the interrupted one when training continues)."""
    out, previous = attempt.out, attempt.previous or {}
    out.mkdir(parents=True, exist_ok=True)
    if not attempt.resume:  # a resumed run keeps the config it started with (a mismatch is refused later)
        (out / "config.yaml").write_text(cfg.to_yaml())
    dead = [i for i in previous.get("prefect_flow_runs", []) if i not in flow_runs]  # not a retry of ours
    if dead:
        _crash_flow_runs(dead, f"process {previous.get('pid')} died; a new attempt resumes {attempt.out.name}")
    record_attempt(out, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), prefect_flow_runs=list(flow_runs))
    run_id = _mlflow_run(attempt, cfg, tracking_uri) if tracking_uri else None
    record_attempt(out, mlflow_run_id=run_id)
    return run_id


def _mlflow_run(attempt: Attempt, cfg: Config, tracking_uri: str) -> str:
    from simsiam.tracking import create_run, kill_if_running, tag_existing_run

    previous = attempt.previous or {}
    old, pid = previous.get("mlflow_run_id"), previous.get("pid")
    note = f"process {pid} stopped before the end; continued from its last checkpoint"
    if attempt.resume and old and tag_existing_run(tracking_uri, old, "simsiam.interrupted", note):
        return old
    if old:  # not continued (no checkpoint, or that run is not on this server): close it, with why
        kill_if_running(tracking_uri, old, f"process {pid} died before its first checkpoint; training "
                                           "restarted in a new run")
    return create_run(tracking_uri, cfg.tracking.experiment, attempt.out.name)


def finish(out: Path, summary: dict[str, Any]) -> None:
    keep = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool, type(None)))}
    (out / FINISHED).write_text(json.dumps({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **keep}))


def record_attempt(out: Path, **fields: Any) -> None:
    """Merge `fields` into `attempt.json`, with this process's pid and host."""
    rec = {**(_read(out / ATTEMPT) or {}), "pid": os.getpid(), "host": socket.gethostname(), **fields}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{ATTEMPT}.tmp"
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, out / ATTEMPT)


def _crash_flow_runs(ids: list[str], reason: str) -> None:
    """Flow runs that a dead process left RUNNING become Crashed (Prefect's state for runs whose
    process died), with the reason; runs already in a final state are left alone."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        for run_id in ids:
            try:
                if client.read_flow_run(run_id).state_type.value == "RUNNING":
                    client.set_flow_run_state(run_id, Crashed(message=reason), force=True)
            except Exception:  # noqa: BLE001 - a run from another Prefect API: nothing to mark here
                continue


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive_here(record: dict[str, Any]) -> bool:
    from simsiam.services.process import pid_alive

    mine = record.get("host") == socket.gethostname() and record.get("pid") != os.getpid()
    return mine and pid_alive(record.get("pid"))
