"""One data-parallel pretraining run on Ray Train (TorchTrainer), tracked in one MLflow run that the
driver creates up front, so restarted workers continue its history."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Sequence

from ray.train import Checkpoint

from simsiam import metrics as M
from simsiam.checkpoint import CHECKPOINT_NAME, load_checkpoint
from simsiam.config import Config
from simsiam.diagnostics import is_collapsed
from simsiam.errors import SimSiamError
from simsiam.ray.cluster import RayWorkers, connect, storage_filesystem
from simsiam.ray.outages import Unreachable, end_run_when_reachable, fit_through_outages, outage_endpoints
from simsiam.ray.worker import build_trainer
from simsiam.reporters import Reporter
from simsiam.results import TrainedRun


def pretrain_distributed(cfg: Config, dist: RayWorkers, name: str | None = None, run_id: str | None = None,
                         reporters: Sequence[Reporter] = ()) -> TrainedRun:
    """Data-parallel pretraining on Ray Train. Re-using `name` with the same storage resumes that run
    (Ray restores its latest checkpoint); `run_id`: the MLflow run to log to (an interrupted
    attempt's, to continue its history). `reporters` run on every rank beside ours. A run that
    fails for good (after `max_failures` restarts) raises SimSiamError and its MLflow run is FAILED."""
    connect(cfg, dist)
    name = name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if dist.tracking_uri:
        from simsiam.tracking import create_run

        run_id = run_id or create_run(dist.tracking_uri, dist.experiment, name)
    trainer = build_trainer(cfg, dist, name, run_id=run_id, run_name=name, reporters=list(reporters))
    result, error = fit_through_outages(trainer, outage_endpoints(cfg, dist), cfg.storage.outage_budget_s)
    if error is None and result.checkpoint is None:
        error = "it finished without reporting a checkpoint"
    if run_id and dist.tracking_uri:
        end_run_when_reachable(dist.tracking_uri, run_id, "FAILED" if error else "FINISHED",
                               cfg.storage.outage_budget_s)
    if isinstance(error, Unreachable):
        raise SimSiamError(f"distributed training stopped: {error}. Its last complete checkpoint is kept: re-run "
                           "the same command to resume from it")
    if error:
        raise SimSiamError(f"distributed training failed after {dist.max_failures} restarts: {error[:300]}")
    return _trained(dict(result.metrics or {}), dist.checkpoint_uri(result.checkpoint.path), run_id, name,
                    dist.workers)


def _trained(metrics: dict, checkpoint: str, run_id: str | None, name: str, workers: int) -> TrainedRun:
    """The run as the steps know it, from the metrics its ranks last reported to Ray."""
    ratio = metrics.get(M.Z_STD_RATIO)
    return TrainedRun(checkpoint=checkpoint, collapsed=ratio is not None and is_collapsed(ratio), run_id=run_id,
                      steps=int(metrics.get("step", 0)), epochs=int(metrics.get("epoch", 0)),
                      resumed_from_step=int(metrics.get("start_step", 0)),
                      metrics=M.pick(metrics, M.TRAINING),
                      where={"ray_run": name, "workers": workers})


def load_result_checkpoint(checkpoint: str, dist: RayWorkers) -> dict:
    """A distributed run's checkpoint (`TrainedRun.checkpoint`), read from its storage."""
    directory = checkpoint.removeprefix("s3://").rsplit("/", 1)[0]
    ckpt = Checkpoint(directory, filesystem=storage_filesystem(dist.storage) if dist.storage else None)
    with ckpt.as_directory() as d:
        return load_checkpoint(Path(d) / CHECKPOINT_NAME)
