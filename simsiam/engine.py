"""The training loop for ONE process: in-process CPU/GPU runs, and each Ray Train worker.

Adapters plug in through `Reporter` (simsiam.reporters); the loop never imports them. A checkpoint
holds model, optimizer, scheduler, step, epoch and RNG state, and data order + augmentation are pure
functions of (seed, epoch, index), so a run resumed from a checkpoint continues bit-identically on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch.utils.data import DataLoader

from simsiam import metrics as M
from simsiam.augment import MultiView, train_transform
from simsiam.batch_augment import BatchAugment
from simsiam.batches import DeviceViews, augment_path, preview_with_originals
from simsiam.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_weights, save_checkpoint
from simsiam.config import Config, validate_config
from simsiam.data import EpochSampler, ImageSource, ViewsDataset, load_source, subset_indices
from simsiam.diagnostics import collapse_std, is_collapsed
from simsiam.errors import ConfigError, DataError
from simsiam.evaluation import STREAM_KNN_BANK, KnnMonitor
from simsiam.label_free import LabelFreeSample
from simsiam.losses import simsiam_loss
from simsiam.models import SimSiam, build_model
from simsiam.optim import build_optimizer
from simsiam.reporters import Reporter, TrainResult
from simsiam.runtime import autocast, resolve_device, resolve_precision, rng_state, seed_everything, set_rng_state
from simsiam.streaming import ShardStream, StreamViews
from simsiam.targets import OnlineTargets, build_targets

WrapModel = Callable[[torch.nn.Module], torch.nn.Module]


@dataclass(frozen=True)
class Plan:
    """The run's shape, fixed by config, data and world size (a resume re-derives the same plan)."""

    total_steps: int
    steps_per_epoch: int
    batch: int  # per rank
    n_views: int  # 4 for asymmetric_2x: two independent pairs per image
    train_images: int
    augment_on: str = "workers"  # where views are made: "device" (batched) or "workers" (per sample)
    augment_why: str = ""
    amp: str = "none"  # train.amp / train.channels_last with `auto` resolved for the device
    channels_last: bool = False


@dataclass
class TrainState:
    """Everything a step changes; what a checkpoint saves and a resume restores."""

    model: SimSiam
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    targets: OnlineTargets = field(default_factory=OnlineTargets)  # loss.target: what p is pulled toward
    net: torch.nn.Module | None = None  # the model as stepped: compiled and/or DDP-wrapped
    step: int = 0
    knn_best: float | None = None
    knn_last: float | None = None
    label_free: dict[str, float] = field(default_factory=dict)  # the last label-free metrics
    last_loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _build_data(cfg: Config, source: ImageSource | ShardStream, rank: int, world_size: int,
                device: torch.device) -> tuple[ViewsDataset | DeviceViews | StreamViews, Plan]:
    n_views = 4 if cfg.loss.symmetry == "asymmetric_2x" else 2
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world_size} workers")
    batch = cfg.train.batch_size // world_size
    # normalised with the training data's statistics, as every later use of the encoder is
    args = (cfg.data.recipe, cfg.data.norm, cfg.data.image_size, cfg.model.in_channels, cfg.data.crop_min_scale)
    if isinstance(source, ShardStream):
        dataset, per_rank, where, why = _stream_views(cfg, source, rank, world_size, n_views, args, batch)
    else:
        indices = subset_indices(len(source), cfg.data.train_subset, cfg.train.seed)
        where, why = augment_path(cfg.data, source)
        if where == "device":
            dataset = DeviceViews(source, indices, BatchAugment(*args), n_views, cfg.train.seed, device)
        else:
            dataset = ViewsDataset(source, MultiView(train_transform(*args), n_views), indices, cfg.train.seed)
        per_rank = len(dataset) // world_size
    steps_per_epoch = per_rank // batch
    if steps_per_epoch <= 0:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the {per_rank * world_size} training "
                          "images the workers can read each epoch")
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    amp, channels_last = resolve_precision(cfg.train.amp, cfg.train.channels_last, device)
    return dataset, Plan(total, steps_per_epoch, batch, n_views, len(dataset), where, why, amp, channels_last)


def _stream_views(cfg: Config, stream: ShardStream, rank: int, world: int, n_views: int, args: tuple,
                  batch: int) -> tuple[StreamViews, int, str, str]:
    """This rank's streamed views and the samples it can count on each epoch (equal steps on all ranks)."""
    if cfg.data.train_subset is not None:
        raise ConfigError("data.train_subset does not apply to a streamed version (data.stream); stage the subset, "
                          "or set data.stream=off")
    stream = replace(stream, rank=rank, world=world)  # shares `reads` with the caller's stream
    # DataLoader workers each drop their last partial batch
    per_rank = stream.samples_per_rank() - max(cfg.data.num_workers - 1, 0) * batch
    dataset = StreamViews(stream, MultiView(train_transform(*args), n_views), cfg.train.seed, cfg.data.shuffle_buffer)
    why = f"{stream.name} streamed: {len(stream.shards)} shards dealt over {world} workers (data.stream)"
    return dataset, per_rank, "workers", why


def _build_model(cfg: Config, device: torch.device, plan: Plan) -> TrainState:
    if plan.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device (no loss scaling on CPU); use bf16 or none")
    model = build_model(cfg.model)
    if cfg.model.sync_bn and torch.distributed.is_available() and torch.distributed.is_initialized():
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN stats over all ranks (paper: SyncBN)
    model = model.to(device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg.optim, cfg.train.batch_size, plan.total_steps,
                                           plan.steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=plan.amp == "fp16" and device.type == "cuda")
    return TrainState(model, optimizer, scheduler, scaler, build_targets(cfg, model, plan.train_images, device))


def _restore(state: TrainState, cfg: Config, path: Path | None) -> None:
    if path is None or not path.exists():
        raise DataError(f"cannot resume: no checkpoint at {path}")
    ckpt = load_checkpoint(path)
    if validate_config(ckpt["config"]) != cfg:  # validated: a checkpoint of an older layout compares equal
        raise ConfigError(f"cannot resume from {path}: its config differs from the requested one")
    load_weights(state.model, ckpt["model"], path)
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    state.targets.load_state_dict(ckpt.get("targets", {}))
    state.step, state.knn_best, state.knn_last = ckpt["step"], ckpt.get("knn_best"), ckpt.get("knn_last")
    state.label_free = dict(ckpt.get("label_free", {}))
    state.metrics = dict(ckpt.get("metrics", {}))  # a resume with no step left still knows if it collapsed
    set_rng_state(ckpt["rng"])


class Checkpointer:
    """Saves the run's checkpoint (main rank only) and tells every rank's reporters, at the same
    steps on all ranks. Never saves weights that produced a non-finite loss."""

    def __init__(self, path: Path | None, is_main: bool, cfg: Config, plan: Plan, reporters: list[Reporter]) -> None:
        self.path, self.is_main, self.cfg, self.plan, self.reporters = path, is_main, cfg, plan, reporters

    def __call__(self, state: TrainState) -> None:
        if state.last_loss is not None and not torch.isfinite(state.last_loss):
            raise FloatingPointError(f"loss is {state.last_loss.item()} at step {state.step}; lower optim.base_lr")
        saved = None
        if self.path is not None and self.is_main:
            saved = save_checkpoint(self.path, {
                "config": self.cfg.to_dict(), "model": state.model.state_dict(),
                "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict(), "targets": state.targets.state_dict(), "step": state.step,
                "epoch": state.step // self.plan.steps_per_epoch, "rng": rng_state(),
                "knn_best": state.knn_best, "knn_last": state.knn_last, "label_free": dict(state.label_free),
                "metrics": dict(state.metrics)})
        for r in self.reporters:
            r.on_checkpoint(saved, state.step)


def _epoch_batches(dataset: ViewsDataset | DeviceViews | StreamViews, cfg: Config, plan: Plan, step: int,
                   rank: int, world: int, device: torch.device) -> Iterable:
    """The rest of the current epoch's (views, dataset positions) batches for this rank (all of it
    unless resumed mid-epoch)."""
    epoch = step // plan.steps_per_epoch
    dataset.set_epoch(epoch)
    done = step - epoch * plan.steps_per_epoch
    if isinstance(dataset, StreamViews):  # a resume reads and skips the epoch's finished batches
        loader = DataLoader(dataset, batch_size=plan.batch, drop_last=True, num_workers=cfg.data.num_workers,
                            pin_memory=device.type == "cuda")
        return islice(loader, done, plan.steps_per_epoch)
    sampler = EpochSampler(len(dataset), cfg.train.seed, epoch, done * plan.batch, rank, world)
    positions = torch.as_tensor(list(sampler), dtype=torch.long).split(plan.batch)  # batches come in sampler order
    if isinstance(dataset, DeviceViews):
        loader = dataset.batches(sampler, plan.batch)
    else:
        loader = DataLoader(dataset, batch_size=plan.batch, drop_last=True, num_workers=cfg.data.num_workers,
                            sampler=sampler, pin_memory=device.type == "cuda")
    return ((views, pos) for (views, _), pos in zip(loader, positions))


def _train_step(state: TrainState, views: list[torch.Tensor], positions: torch.Tensor, cfg: Config, plan: Plan,
                device: torch.device):
    """One optimizer step on a batch of views of the images at `positions`; returns (loss, z1, lr used)."""
    if len(views) == 4:  # asymmetric_2x: both pairs in one doubled batch
        views = [torch.cat([views[0], views[2]]), torch.cat([views[1], views[3]])]
    fmt = torch.channels_last if plan.channels_last else torch.contiguous_format
    x1, x2 = (v.to(device, non_blocking=True, memory_format=fmt) for v in views)
    lr = state.optimizer.param_groups[0]["lr"]
    state.targets.before_step(state.model, state.step)
    with autocast(device, plan.amp):
        p1, p2, z1, z2 = state.net(x1, x2)
        t1, t2 = state.targets(z1, z2, x1, x2, positions)  # SimSiam: t = z; Sec. 5: snapshot or memory
        loss = simsiam_loss(p1.float(), p2.float(), t1.float(), t2.float(), stop_grad=cfg.loss.stop_grad,
                            similarity=cfg.loss.similarity, symmetry=cfg.loss.symmetry)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.step += 1
    state.last_loss = loss.detach()
    return loss, z1, lr


def _step_metrics(loss: torch.Tensor, z: torch.Tensor, lr: float, step: int) -> dict[str, float]:
    z_std = collapse_std(z)
    metrics = {M.LOSS: loss.item(), M.Z_STD: z_std, M.Z_STD_RATIO: z_std * math.sqrt(z.shape[1]), M.LR: lr}
    if not math.isfinite(metrics[M.LOSS]):
        raise FloatingPointError(f"loss is {metrics[M.LOSS]} at step {step}; lower optim.base_lr")
    return metrics


def _end_epoch(state: TrainState, cfg: Config, plan: Plan, monitor: KnnMonitor | None,
               free: LabelFreeSample | None, device: torch.device, reporters: list[Reporter]) -> None:
    """At an epoch's end (or the run's): the kNN monitor and the label-free metrics when due, then on_epoch."""
    final = state.step == plan.total_steps
    if state.step % plan.steps_per_epoch and not final:
        return
    epoch = math.ceil(state.step / plan.steps_per_epoch)
    metrics = dict(state.metrics)
    if monitor is not None and (epoch % cfg.eval.knn_every_epochs == 0 or final):
        state.knn_last = monitor(state.model.backbone, device)
        state.knn_best = state.knn_last if state.knn_best is None else max(state.knn_best, state.knn_last)
        state.model.train()
        metrics.update({M.KNN_MONITOR: state.knn_last, M.KNN_MONITOR_BEST: state.knn_best})
    if free is not None and (epoch % cfg.eval.label_free_every_epochs == 0 or final):
        state.label_free = free(state.model.backbone, device)[0]
        state.model.train()
        metrics.update(state.label_free)
    for r in reporters:
        r.on_epoch(epoch, metrics)


def _start(state: TrainState, cfg: Config, plan: Plan, device: torch.device, monitor: KnnMonitor | None,
           reporters: list[Reporter], rank: int, world_size: int) -> None:
    info = {"rank": rank, "world_size": world_size, "total_steps": plan.total_steps,
            "steps_per_epoch": plan.steps_per_epoch, "start_step": state.step,
            "train_images": plan.train_images, "device": str(device), "augment_on": plan.augment_on,
            "augment_why": plan.augment_why,
            "amp": plan.amp, "channels_last": plan.channels_last,
            "init_lr": state.optimizer.param_groups[0]["initial_lr"]}
    for r in reporters:
        r.on_start(cfg, info)
    if monitor is not None and cfg.eval.knn_at_start and state.step == 0:
        init_knn = monitor(state.model.backbone, device)
        for r in reporters:
            r.on_epoch(0, {M.KNN_MONITOR: init_knn})


def train(cfg: Config, reporters: Iterable[Reporter] = (), out_dir: str | Path | None = None,
          resume: bool = False, stop_after_steps: int | None = None,
          train_source: ImageSource | ShardStream | None = None, test_source: ImageSource | None = None,
          rank: int = 0, world_size: int = 1, wrap_model: WrapModel | None = None,
          eval_sources: tuple[ImageSource, ImageSource] | None = None) -> TrainResult:
    """Pretrain SimSiam per `cfg`. With `out_dir`, checkpoints go to out_dir/checkpoint.pt each epoch
    (and every `train.checkpoint_every_steps`); `resume` continues from it. `stop_after_steps`
    ends the process early as if interrupted (the schedule still spans the full run).

    Data-parallel use (one call per rank, e.g. in Ray Train workers): `train.batch_size` is the
    global batch, split over `world_size` ranks that read disjoint samples; `wrap_model` wraps the
    model for the forward/backward (DDP); only rank 0 writes checkpoints and runs the kNN monitor,
    while every rank calls `on_checkpoint` (path None off rank 0) at the same steps.

    The kNN monitor measures on `eval_sources` (labelled data apart from the training data: its train
    split as the bank, its test split as the queries); without them, on the training data's own
    labelled splits; for an image collection without them it is off."""
    t0, reporters = time.perf_counter(), list(reporters)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    train_source = train_source or load_source(cfg.data, "train")
    dataset, plan = _build_data(cfg, train_source, rank, world_size, device)
    state = _build_model(cfg, device, plan)
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if resume:
        _restore(state, cfg, ckpt_path)
    if cfg.train.compile:
        state.model.compile()
    state.net = wrap_model(state.model) if wrap_model is not None else state.model
    start_step = state.step
    monitor = _knn_monitor(cfg, train_source, test_source, eval_sources) \
        if cfg.eval.knn_every_epochs > 0 and rank == 0 else None
    free = LabelFreeSample(cfg, train_source) if cfg.eval.label_free_every_epochs > 0 and rank == 0 else None
    _start(state, cfg, plan, device, monitor, reporters, rank, world_size)
    if rank == 0 and reporters:
        views, originals = preview_with_originals(dataset, norm=cfg.data.norm)
        for r in reporters:
            r.on_views(views, originals)
    checkpoint = Checkpointer(ckpt_path, rank == 0, cfg, plan, reporters)
    limit = plan.total_steps if stop_after_steps is None else min(plan.total_steps, stop_after_steps)
    state.model.train()
    while state.step < limit:
        for views, positions in _epoch_batches(dataset, cfg, plan, state.step, rank, world_size, device):
            loss, z1, lr = _train_step(state, views, positions, cfg, plan, device)
            _after_step(state, cfg, plan, limit, (loss, z1, lr), checkpoint, reporters)
            if state.step >= limit:
                break
        _end_epoch(state, cfg, plan, monitor, free, device, reporters)
        checkpoint(state)
    return _finish(state, plan, start_step, ckpt_path, time.perf_counter() - t0, reporters, train_source)


def _knn_monitor(cfg: Config, train_source, test_source, eval_sources) -> KnnMonitor | None:
    if eval_sources is not None:
        return KnnMonitor(cfg, *eval_sources)
    if cfg.data.dataset == "images":  # no labels to measure with
        return None
    bank = train_source
    if isinstance(train_source, ShardStream):  # a seeded sample of whole shards, not the whole version
        bank = train_source.sample_source(cfg.eval.knn_train_samples or STREAM_KNN_BANK, cfg.train.seed + 1)
    return KnnMonitor(cfg, bank, test_source or load_source(cfg.data, "test"))


def _after_step(state: TrainState, cfg: Config, plan: Plan, limit: int, out: tuple, checkpoint,
                reporters: list[Reporter]) -> None:
    """Report the step's metrics (every `train.log_every_steps` and at the last step) and take the
    mid-epoch checkpoints of `train.checkpoint_every_steps`."""
    if state.step % cfg.train.log_every_steps == 0 or state.step == limit:
        state.metrics = _step_metrics(*out, state.step)
        for r in reporters:
            r.on_step(state.step, state.metrics)
    every = cfg.train.checkpoint_every_steps
    # Epoch ends checkpoint after their kNN (in `train`), so a resume never skips an epoch's work.
    if every and state.step % every == 0 and state.step < limit and state.step % plan.steps_per_epoch:
        checkpoint(state)


def _finish(state: TrainState, plan: Plan, start_step: int, ckpt_path: Path | None, wall_s: float,
            reporters: list[Reporter], source) -> TrainResult:
    ratio = state.metrics.get(M.Z_STD_RATIO)
    result = TrainResult(model=state.model, step=state.step, epoch=state.step // plan.steps_per_epoch,
                         total_steps=plan.total_steps, start_step=start_step, last_metrics=state.metrics,
                         knn_last=state.knn_last, knn_best=state.knn_best, label_free=state.label_free,
                         collapsed=ratio is not None and is_collapsed(ratio), wall_s=wall_s, checkpoint=ckpt_path,
                         targets=state.targets, train_source=source)
    for r in reporters:
        r.on_end(result)
    return result
