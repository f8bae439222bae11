"""What every Ray worker runs: the core engine (with DDP over several workers), resumed from Ray's
latest checkpoint, reporting each checkpoint to Ray (which uploads it) and, on rank 0, the run to
MLflow. The same loop runs in a Ray Train worker (`worker_loop`) and, for a one-worker sweep
trial, in the Tune trial's own process (`trial_loop`)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint
from ray.train.torch import TorchTrainer

from simsiam.checkpoint import CHECKPOINT_NAME
from simsiam.config import Config, override_config, validate_config
from simsiam.engine import train
from simsiam.library_env import apply_library_defaults
from simsiam.ray.cluster import RayWorkers, loop_config, run_config, scaling_config
from simsiam.reporters import Reporter
from simsiam.storage.sources import eval_sources, open_sources


@dataclass
class LoopSession:
    """What the loop takes from Ray: Ray Train's session in a TorchTrainer worker, or Tune's in a trial."""

    rank: int
    world: int
    device: Any  # torch.device
    report: Callable[..., None]  # (metrics, checkpoint=None)
    checkpoint_type: type  # the Checkpoint class that `report` expects
    get_checkpoint: Callable[[], Any]


def _train_session() -> LoopSession:
    ctx = ray.train.get_context()
    return LoopSession(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(), ray.train.report,
                       Checkpoint, ray.train.get_checkpoint)


def _tune_session(use_gpu: bool) -> LoopSession:
    import torch
    from ray import tune

    # Tune gives the trial's actor its GPU (or a fraction of one) as the only visible device.
    return LoopSession(0, 1, torch.device("cuda", 0) if use_gpu else torch.device("cpu"), tune.report,
                       tune.Checkpoint, tune.get_checkpoint)


class RayReportReporter(Reporter):
    """On every checkpoint (each epoch end, and every `train.checkpoint_every_steps`), all ranks report
    to Ray; rank 0 attaches the checkpoint directory, which Ray uploads to storage."""

    def __init__(self, session: LoopSession) -> None:
        self.metrics: dict[str, float] = {}
        self.session = session

    def on_start(self, cfg, plan) -> None:
        self.metrics["start_step"] = float(plan["start_step"])  # > 0: restored from a checkpoint

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.update(metrics)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.metrics.update(metrics)
        self.metrics["epoch"] = float(epoch)

    def on_checkpoint(self, path: Path | None, step: int) -> None:
        report = {**self.metrics, "step": step}
        if path is not None:
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy(path, Path(tmp) / CHECKPOINT_NAME)
                self.session.report(report, checkpoint=self.session.checkpoint_type.from_directory(tmp))
        else:
            self.session.report(report)


def _restore_into(local: Path, session: LoopSession) -> bool:
    """Copy Ray's latest checkpoint (after a restart, or a re-used run name) into `local`."""
    ckpt = session.get_checkpoint()
    if ckpt is None:
        return False
    with ckpt.as_directory() as d:
        shutil.copy(Path(d) / CHECKPOINT_NAME, local / CHECKPOINT_NAME)
    return True


def _mlflow_reporter(config: dict, cfg) -> Reporter:
    from simsiam.tracking import MlflowReporter

    return MlflowReporter(config["tracking_uri"], config.get("experiment", "simsiam"), run_id=config.get("run_id"),
                          parent_run_id=config.get("parent_run_id"), run_name=config.get("run_name"),
                          system_metrics=cfg.tracking.system_metrics, flush_every=cfg.tracking.flush_every_steps)


def _final_eval(result, cfg: Config, judged_on: tuple | None, device, tracker) -> dict[str, float]:
    """The evaluation after training, as the pipeline's evaluate step runs it, on the trained backbone
    in memory: the label-free metrics, and the kNN and probe on `judged_on` (labelled data) if any;
    logged to the trial's MLflow run too."""
    from simsiam.evaluation import evaluate_after_training
    from simsiam.label_free import label_free_after_training

    metrics = label_free_after_training(result.model.backbone, cfg, result.train_source, device)[0]
    if judged_on is not None:
        metrics.update(evaluate_after_training(result.model.backbone, cfg, *judged_on, device)[0])
    if tracker is not None:
        tracker.log_final(result.step, metrics)
    return metrics


def build_trainer(cfg: Config, dist: RayWorkers, name: str, callbacks: list | None = None, **run: Any) -> TorchTrainer:
    """The one way our Ray Train workers are built, for a pretraining run and for each sweep trial:
    `worker_loop` on `dist`'s workers, checkpoints under `name` in its storage. `run`: the MLflow run
    to log to (run_id, parent_run_id, run_name) and the caller's `reporters`, pickled to every rank."""
    return TorchTrainer(worker_loop, train_loop_config=loop_config(cfg, dist, **run),
                        scaling_config=scaling_config(dist), run_config=run_config(name, dist, callbacks))


def worker_loop(config: dict) -> None:
    """A TorchTrainer worker's loop."""
    run_loop(config, _train_session())


def trial_loop(config: dict, use_gpu: bool) -> None:
    """A one-worker sweep trial's loop, in the Tune trial's process: no TorchTrainer controller and
    worker group to start, which cost a short trial more than its training (bench/sweep_overhead.py)."""
    run_loop(config, _tune_session(use_gpu))


def _use_assigned_cpus() -> None:
    """Torch threads = the CPUs Ray gave this process. Ray sets OMP_NUM_THREADS so only where the
    driver's environment has none; a driver's own value (2 on a 2-core machine) in each of two
    one-CPU trials oversubscribes the cores."""
    import math

    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, math.floor(cpus)))


def run_loop(config: dict, session: LoopSession) -> None:
    apply_library_defaults()  # a cluster node's workers do not inherit the driver's environment
    _use_assigned_cpus()
    rank, world, device = session.rank, session.world, session.device
    cfg = override_config(validate_config(config["cfg"]),
                          [f"train.device={device.type}" + (f":{device.index}" if device.index is not None else "")])
    local = Path(tempfile.mkdtemp(prefix=f"simsiam-rank{rank}-"))
    resume = _restore_into(local, session)
    final_eval = bool(config.get("final_eval"))
    judging = rank == 0 and (cfg.eval.knn_every_epochs > 0 or final_eval)
    judged_on = eval_sources(cfg, config.get("state_path")) if judging else None  # labelled data apart, if any
    train_src, test_src = open_sources(cfg, need_test=judging and judged_on is None, state=config.get("state_path"))
    tracker = _mlflow_reporter(config, cfg) if rank == 0 and config.get("tracking_uri") else None
    # log before reporting: a stopped trial may not return from report
    ray_reporter = RayReportReporter(session)
    reporters = [*config.get("reporters", []), *([tracker] if tracker else []), ray_reporter]
    wrap = ray.train.torch.prepare_model if world > 1 else None
    try:
        result = train(cfg, reporters, out_dir=local, resume=resume, train_source=train_src, test_source=test_src,
                       rank=rank, world_size=world, wrap_model=wrap, eval_sources=judged_on)
        if final_eval:
            labelled = (judged_on or (train_src, test_src)) if cfg.has_eval_data else None
            final = _final_eval(result, cfg, labelled, device, tracker) if rank == 0 else {}
            session.report({**ray_reporter.metrics, **final, "final_eval": 1.0})  # every rank reports
    finally:
        if tracker is not None:
            tracker.finish(end_run=False)
        shutil.rmtree(local, ignore_errors=True)
