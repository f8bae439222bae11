"""The training loop for ONE process (in-process CPU runs, and each Ray Train worker later).

Adapters plug in through `Reporter` (on_step / on_epoch / on_checkpoint / on_end); the loop
never imports them. A checkpoint holds model, optimizer, scheduler, step, epoch and RNG state,
and data order + augmentation are pure functions of (seed, epoch, index), so a run resumed from
a checkpoint continues bit-identically on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from simsiam.augment import MultiView, train_transform
from simsiam.config import Config, validate_config
from simsiam.data import EpochSampler, ImageSource, ViewsDataset, load_source, subset_indices
from simsiam.diagnostics import collapse_std, is_collapsed
from simsiam.errors import ConfigError, DataError
from simsiam.evaluation import features_for, knn_accuracy
from simsiam.losses import simsiam_loss
from simsiam.models import SimSiam, build_model
from simsiam.optim import build_optimizer

CHECKPOINT_NAME = "checkpoint.pt"


class Reporter:
    """Callback protocol; subclass and override what you need. Metrics are plain floats."""

    def on_start(self, cfg: Config, plan: dict[str, Any]) -> None: ...
    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, path: Path | None, step: int) -> None: ...
    def on_end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    model: SimSiam
    step: int
    epoch: int
    total_steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    knn_last: float | None = None
    knn_best: float | None = None
    collapsed: bool = False
    wall_s: float = 0.0
    checkpoint: Path | None = None

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


# --------------------------------------------------------------------------- reporters


class JsonlReporter(Reporter):
    """Appends one JSON line per logged step/epoch to DIR/metrics.jsonl. On resume, lines past
    the checkpoint's step (written after it, then lost with the interrupted run) are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        self.step = resume_step or 0
        if resume_step is not None and path.exists():
            keep = []
            for ln in path.read_text().splitlines():
                try:
                    if json.loads(ln).get("step", 0) <= resume_step:
                        keep.append(ln)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
            path.write_text("".join(ln + "\n" for ln in keep))
        elif resume_step is None and path.exists():
            path.unlink()

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.step = step
        self._write({"step": step, **metrics})

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._write({"epoch": epoch, "step": self.step, **metrics})


class ProgressReporter(Reporter):
    """tqdm bar over optimizer steps with the loss and collapse ratio in the postfix."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None

    def on_start(self, cfg: Config, plan: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=plan["total_steps"], initial=plan["start_step"], desc=f"pretrain {cfg.name}",
                        unit="step", file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 15.0)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", z_ratio=f"{metrics['train/z_std_ratio']:.2f}",
                                 refresh=False)
            self.bar.refresh() if step == self.bar.total else self.bar.update(0)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is not None and "knn/top1" in metrics:
            self.bar.write(f"epoch {epoch}: knn/top1={metrics['knn/top1']:.2f}", file=sys.stderr)

    def on_end(self, result: TrainResult) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a device; allowed: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is available; use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write atomically: a reader sees the old checkpoint or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataError(f"checkpoint {path} cannot be read: {exc}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise DataError(f"checkpoint {path} is not a simsiam checkpoint (missing model/config)")
    return ckpt


def load_weights(model: torch.nn.Module, state: dict[str, Any], source: str | Path) -> None:
    """load_state_dict with a user-facing error when the architecture does not match."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"checkpoint {source} does not fit the configured model (model.* keys changed?): {first}") from None


def model_from_checkpoint(path: str | Path) -> tuple[SimSiam, Config, dict[str, Any]]:
    ckpt = load_checkpoint(path)
    cfg = validate_config(ckpt["config"])
    model = build_model(cfg.model)
    load_weights(model, ckpt["model"], path)
    return model, cfg, ckpt


@dataclass
class EvalSets:
    """Sources + fixed index subsets for the kNN monitor, built once per run."""

    train: ImageSource
    test: ImageSource
    train_idx: torch.Tensor
    test_idx: torch.Tensor


def knn_monitor(model: SimSiam, cfg: Config, sets: EvalSets, device: torch.device) -> float:
    ftr, ytr = features_for(model.backbone, cfg, sets.train, sets.train_idx, device)
    fte, yte = features_for(model.backbone, cfg, sets.test, sets.test_idx, device)
    return knn_accuracy(ftr, ytr, fte, yte, len(sets.train.classes), cfg.eval.knn_k, cfg.eval.knn_t)


# --------------------------------------------------------------------------- the loop


def train(cfg: Config, reporters: Iterable[Reporter] = (), out_dir: str | Path | None = None,
          resume: bool = False, stop_after_steps: int | None = None,
          train_source: ImageSource | None = None, test_source: ImageSource | None = None,
          rank: int = 0, world_size: int = 1, wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
          ) -> TrainResult:
    """Pretrain SimSiam per `cfg`. With `out_dir`, checkpoints go to out_dir/checkpoint.pt each epoch
    (and every `train.checkpoint_every_steps`); `resume` continues from it. `stop_after_steps`
    ends the process early as if interrupted (the schedule still spans the full run).

    Data-parallel use (one call per rank, e.g. in Ray Train workers): `train.batch_size` is the
    global batch, split over `world_size` ranks that read disjoint samples; `wrap_model` wraps the
    model for the forward/backward (DDP); only rank 0 writes checkpoints and runs the kNN monitor,
    while every rank calls `on_checkpoint` (path None off rank 0) at the same steps."""
    t0 = time.perf_counter()
    reporters = list(reporters)
    device = resolve_device(cfg.train.device)
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None

    seed_everything(cfg.train.seed)
    train_source = train_source or load_source(cfg.data, "train")
    indices = subset_indices(len(train_source), cfg.data.train_subset, cfg.train.seed)
    n_views = 4 if cfg.loss.symmetry == "asymmetric_2x" else 2
    tf = train_transform(cfg.data.recipe, train_source.name, cfg.data.image_size, cfg.model.in_channels,
                         cfg.data.crop_min_scale)
    dataset = ViewsDataset(train_source, MultiView(tf, n_views), indices, cfg.train.seed)
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world_size} workers")
    batch = cfg.train.batch_size // world_size  # per rank
    steps_per_epoch = (len(dataset) // world_size) // batch
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the {len(dataset)} training images")
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)

    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device (no loss scaling on CPU); use bf16 or none")
    model = build_model(cfg.model)
    if cfg.model.sync_bn and torch.distributed.is_available() and torch.distributed.is_initialized():
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN stats over all ranks (paper: SyncBN)
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg.optim, cfg.train.batch_size, total_steps, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16" and device.type == "cuda")

    step, best_knn, last_knn = 0, None, None
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise DataError(f"cannot resume: no checkpoint at {ckpt_path}")
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["config"] != cfg.to_dict():
            raise ConfigError(f"cannot resume from {ckpt_path}: its config differs from the requested one")
        load_weights(model, ckpt["model"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step, best_knn, last_knn = ckpt["step"], ckpt.get("knn_best"), ckpt.get("knn_last")
        _set_rng_state(ckpt["rng"])
    if cfg.train.compile:
        model.compile()
    net = wrap_model(model) if wrap_model is not None else model
    start_step = step
    is_main = rank == 0

    eval_sets = None
    if cfg.eval.knn_every_epochs > 0 and is_main:
        test_source = test_source or load_source(cfg.data, "test")
        eval_sets = EvalSets(train_source, test_source,
                             subset_indices(len(train_source), cfg.eval.knn_train_samples, cfg.train.seed + 1),
                             subset_indices(len(test_source), cfg.eval.knn_test_samples, cfg.train.seed + 2))

    plan = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "start_step": step,
            "train_images": len(dataset), "device": str(device),
            "init_lr": optimizer.param_groups[0]["initial_lr"]}
    for r in reporters:
        r.on_start(cfg, plan)
    if eval_sets is not None and cfg.eval.knn_at_start and step == 0:
        init_knn = knn_monitor(model, cfg, eval_sets, device)
        model.train()
        for r in reporters:
            r.on_epoch(0, {"knn/top1": init_knn})

    def checkpoint() -> None:
        if last_loss is not None and not torch.isfinite(last_loss):  # never save diverged weights
            raise FloatingPointError(f"loss is {last_loss.item()} at step {step}; lower optim.base_lr")
        if ckpt_path is None or not is_main:
            for r in reporters:
                r.on_checkpoint(None, step)
            return
        save_checkpoint(ckpt_path, {
            "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
            "epoch": step // steps_per_epoch, "rng": _rng_state(), "knn_best": best_knn, "knn_last": last_knn,
        })
        for r in reporters:
            r.on_checkpoint(ckpt_path, step)

    metrics: dict[str, float] = {}
    last_loss: torch.Tensor | None = None
    limit = min(total_steps, stop_after_steps) if stop_after_steps is not None else total_steps
    model.train()
    while step < limit:
        epoch = step // steps_per_epoch
        dataset.set_epoch(epoch)
        done_in_epoch = step - epoch * steps_per_epoch
        loader = DataLoader(dataset, batch_size=batch, drop_last=True, num_workers=cfg.data.num_workers,
                            sampler=EpochSampler(len(dataset), cfg.train.seed, epoch, done_in_epoch * batch,
                                                 rank, world_size),
                            pin_memory=device.type == "cuda")
        for views, _ in loader:
            if n_views == 4:  # asymmetric_2x: two independent pairs per image
                x1, x2 = torch.cat([views[0], views[2]]), torch.cat([views[1], views[3]])
            else:
                x1, x2 = views
            mf = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
            x1 = x1.to(device, non_blocking=True, memory_format=mf)
            x2 = x2.to(device, non_blocking=True, memory_format=mf)
            lr = optimizer.param_groups[0]["lr"]
            with _autocast(device, cfg.train.amp):
                p1, p2, z1, z2 = net(x1, x2)
                loss = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float(), stop_grad=cfg.loss.stop_grad,
                                    similarity=cfg.loss.similarity, symmetry=cfg.loss.symmetry)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            last_loss = loss.detach()
            if step == cfg.train.fail_at_step and start_step == 0 and rank == world_size - 1:
                raise RuntimeError(f"injected failure at step {step} (train.fail_at_step, testing only)")
            if step % cfg.train.log_every_steps == 0 or step == limit:
                z_std = collapse_std(z1)
                metrics = {"train/loss": loss.item(), "train/z_std": z_std,
                           "train/z_std_ratio": z_std * math.sqrt(z1.shape[1]), "train/lr": lr}
                if not math.isfinite(metrics["train/loss"]):
                    raise FloatingPointError(f"loss is {metrics['train/loss']} at step {step}; lower optim.base_lr")
                for r in reporters:
                    r.on_step(step, metrics)
            # Epoch ends checkpoint after their kNN (below), so a resume never skips an epoch's work.
            if (cfg.train.checkpoint_every_steps and step % cfg.train.checkpoint_every_steps == 0
                    and step < limit and step % steps_per_epoch != 0):
                checkpoint()
            if step >= limit:
                break
        epoch_done = step % steps_per_epoch == 0 or step == total_steps
        if epoch_done:
            epoch_num = math.ceil(step / steps_per_epoch)
            epoch_metrics = dict(metrics)
            final = step == total_steps
            if eval_sets is not None and (epoch_num % cfg.eval.knn_every_epochs == 0 or final):
                last_knn = knn_monitor(model, cfg, eval_sets, device)
                best_knn = last_knn if best_knn is None else max(best_knn, last_knn)
                model.train()
                epoch_metrics.update({"knn/top1": last_knn, "knn/best_top1": best_knn})
            for r in reporters:
                r.on_epoch(epoch_num, epoch_metrics)
        checkpoint()

    collapsed = bool(metrics) and is_collapsed(metrics["train/z_std_ratio"])
    result = TrainResult(model=model, step=step, epoch=step // steps_per_epoch, total_steps=total_steps,
                         last_metrics=metrics, knn_last=last_knn, knn_best=best_knn, collapsed=collapsed,
                         wall_s=time.perf_counter() - t0, checkpoint=ckpt_path)
    for r in reporters:
        r.on_end(result)
    return result
