"""One data-parallel pretraining run on Ray Train (TorchTrainer), tracked in one MLflow run that the
driver creates up front, so restarted workers continue its history."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.train import Checkpoint

from simsiam import faults
from simsiam.checkpoint import CHECKPOINT_NAME, load_checkpoint
from simsiam.config import Config
from simsiam.ray.cluster import DistSettings, connect, storage_filesystem
from simsiam.ray.worker import build_trainer


@dataclass
class DistResult:
    name: str
    metrics: dict[str, Any]
    checkpoint_path: str | None
    run_id: str | None
    error: str | None = None


def pretrain_distributed(cfg: Config, dist: DistSettings, name: str | None = None,
                         run_id: str | None = None) -> DistResult:
    """Data-parallel pretraining on Ray Train. Re-using `name` with the same storage resumes that run;
    `run_id`: the MLflow run to log to (an interrupted attempt's, to continue its history)."""
    connect(cfg, dist)
    name = name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if dist.tracking_uri:
        from simsiam.tracking import create_run, end_run

        run_id = run_id or create_run(dist.tracking_uri, dist.experiment, name)
    try:
        # Ray 2.60 raises when training fails for good (after max_failures restarts)
        result = build_trainer(cfg, dist, name, injected=faults.from_env().to_dict(), run_id=run_id,
                               run_name=name).fit()
    except Exception as exc:  # noqa: BLE001 - reported as DistResult.error; the caller decides
        if run_id:
            end_run(dist.tracking_uri, run_id, "FAILED")
        return DistResult(name, {}, None, run_id, f"{type(exc).__name__}: {str(exc)[:500]}")
    if run_id:
        end_run(dist.tracking_uri, run_id, "FAILED" if result.error else "FINISHED")
    return DistResult(name, dict(result.metrics or {}), result.checkpoint.path if result.checkpoint else None,
                      run_id, repr(result.error) if result.error else None)


def load_result_checkpoint(result: DistResult, dist: DistSettings) -> dict:
    """The final checkpoint of a distributed run, read from its storage."""
    ckpt = Checkpoint(result.checkpoint_path, filesystem=storage_filesystem(dist.storage) if dist.storage else None)
    with ckpt.as_directory() as d:
        return load_checkpoint(Path(d) / CHECKPOINT_NAME)
