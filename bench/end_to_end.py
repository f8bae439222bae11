"""End-to-end throughput pieces for bench/throughput.py: the real engine loop timed per
`data.augment_on`, the batched augmentation alone, and lightly's SimSiam recipe on the same shape."""

from __future__ import annotations

import time

import torch

from simsiam.batch_augment import BatchAugment, uniforms
from simsiam.config import override_config
from simsiam.data import subset_indices
from simsiam.engine import train
from simsiam.models import build_model
from simsiam.reporters import Reporter
from simsiam.runtime import resolve_device

# The issue-12 comparison shape: thin R18-CIFAR width 16, 32 px RGB, 3-layer 2048 projector,
# 512 predictor bottleneck, batch 256.
LIGHTLY_SHAPE = ["model.width=16", "model.in_channels=3", "model.proj_layers=3", "model.dim=2048",
                 "model.pred_dim=512", "data.image_size=32", "data.recipe=cifar", "train.batch_size=256",
                 "data.train_subset=null"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class _StepClock(Reporter):
    """Wall time from the end of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.t0, self.t1, self.plan = warmup, device, None, None, {}

    def on_start(self, cfg, plan) -> None:
        self.plan = plan

    def on_step(self, step: int, metrics) -> None:
        _sync(self.device)
        if step == self.warmup:
            self.t0 = time.perf_counter()
        self.t1 = time.perf_counter()


def bench_end_to_end(cfg, source, steps: int, warmup: int) -> dict:
    """Source images/s through engine.train: sampling, augmentation, transfer and the step."""
    cfg = override_config(cfg, [f"train.max_steps={steps + warmup}", "eval.knn_every_epochs=0",
                                "train.log_every_steps=1", "train.epochs=1000"])
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    clock = _StepClock(warmup, device)
    try:
        train(cfg, [clock], train_source=source)
    except Exception as exc:  # noqa: BLE001 - a path unsupported here is a result, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    dt = clock.t1 - clock.t0
    out = {"img_per_s": round(cfg.train.batch_size * steps / dt, 1), "step_ms": round(1000 * dt / steps, 1),
           "augment_on": clock.plan.get("augment_on"), "amp": clock.plan.get("amp"),
           "num_workers": cfg.data.num_workers}
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def bench_augment_device(cfg, source, n: int) -> float:
    """Images/s through the batched two-view augmentation on the training device."""
    images = getattr(source, "images", None)
    if images is None:
        return 0.0
    device = resolve_device(cfg.train.device)
    aug = BatchAugment(cfg.data.recipe, source.name, cfg.data.image_size, cfg.model.in_channels,
                       cfg.data.crop_min_scale)
    images = images.to(device)
    index = subset_indices(len(source), n, 0)
    batch = cfg.train.batch_size
    for v in range(2):  # warm-up (CUDA kernels, allocator)
        aug(images[index[:batch].to(device)], uniforms(0, 0, index[:batch], v))
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(index), batch):
        idx = index[start:start + batch]
        x = images[idx.to(device)]
        for v in range(2):
            aug(x, uniforms(0, 1, idx, v))
    _sync(device)
    return len(index) / (time.perf_counter() - t0)


class _PilViews(torch.utils.data.Dataset):
    """What a lightly user writes: PIL images from a torchvision-style dataset, lightly's transform."""

    def __init__(self, source, indices, transform, grey: bool = False) -> None:
        self.source, self.indices, self.transform, self.mode = source, indices, transform, "L" if grey else "RGB"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        from PIL import Image

        img, label = self.source[int(self.indices[i])]
        pil = Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).convert(self.mode)
        return self.transform(pil), label


def _lightly_model(cfg, device: torch.device) -> torch.nn.Module:
    from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

    class LightlySimSiam(torch.nn.Module):  # lightly's SimSiam example, with our thin backbone
        def __init__(self) -> None:
            super().__init__()
            self.backbone = build_model(cfg.model).backbone
            self.projection_head = SimSiamProjectionHead(self.backbone.out_dim, cfg.model.dim, cfg.model.dim)
            self.prediction_head = SimSiamPredictionHead(cfg.model.dim, cfg.model.pred_hidden, cfg.model.dim)

        def forward(self, x):
            z = self.projection_head(self.backbone(x).flatten(start_dim=1))
            return z.detach(), self.prediction_head(z)

    return LightlySimSiam().to(device)


def lightly_step(model, criterion, opt, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """One step of lightly's SimSiam example: the symmetric negative cosine, stop-grad on z."""
    z0, p0 = model(x0)
    z1, p1 = model(x1)
    loss = 0.5 * (criterion(z0, p1) + criterion(z1, p0))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def bench_lightly(cfg, source, steps: int, warmup: int) -> dict:
    """lightly's SimSiam training loop (its docs' example) on our shape: images/s end to end."""
    try:
        import lightly
        from lightly.loss import NegativeCosineSimilarity
        from lightly.transforms import SimSiamTransform
    except ImportError as exc:
        return {"error": f"lightly is not installed ({exc}): pip install -e '.[bench]'"}
    device = resolve_device(cfg.train.device)
    model = _lightly_model(cfg, device)
    transform = SimSiamTransform(input_size=cfg.data.image_size, gaussian_blur=0.0)
    batch = cfg.train.batch_size
    index = subset_indices(len(source), batch * (steps + warmup), 0)
    loader = torch.utils.data.DataLoader(_PilViews(source, index, transform), batch_size=batch, shuffle=True,
                                         drop_last=True, num_workers=cfg.data.num_workers)
    criterion = NegativeCosineSimilarity()
    opt = torch.optim.SGD(model.parameters(), lr=0.06 * batch / 256, momentum=0.9, weight_decay=5e-4)
    t0 = None
    for i, ((x0, x1), _) in enumerate(loader):
        lightly_step(model, criterion, opt, x0.to(device), x1.to(device)).item()
        _sync(device)
        if i + 1 == warmup:
            t0 = time.perf_counter()
    dt = time.perf_counter() - t0
    return {"img_per_s": round(batch * steps / dt, 1), "step_ms": round(1000 * dt / steps, 1),
            "version": lightly.__version__, "num_workers": cfg.data.num_workers}


def _kornia_pipeline(cfg, channels: int):
    import kornia.augmentation as K

    size = (cfg.data.image_size, cfg.data.image_size)
    ops = [K.RandomResizedCrop(size, scale=(cfg.data.crop_min_scale, 1.0))]
    if cfg.data.recipe == "grey":
        ops += [K.RandomHorizontalFlip(), K.ColorJitter(0.4, 0.4, p=0.8)]
    else:
        ops += [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
        if cfg.data.recipe == "imagenet":
            ops.append(K.RandomGaussianBlur((23, 23), (0.1, 2.0), p=0.5))
        ops.append(K.RandomHorizontalFlip())
    return K.AugmentationSequential(*ops)


def bench_augment_kornia(cfg, source, n: int) -> float | str:
    """Images/s through the same recipe as kornia.augmentation ops (its own per-sample sampling)."""
    try:
        pipeline = _kornia_pipeline(cfg, cfg.model.in_channels)
    except ImportError as exc:
        return f"kornia is not installed ({exc}): pip install -e '.[bench]'"
    images = getattr(source, "images", None)
    if images is None:
        return "no in-memory images"
    device = resolve_device(cfg.train.device)
    images, batch = images.to(device), cfg.train.batch_size
    index = subset_indices(len(source), n, 0)
    channels = cfg.model.in_channels
    for start in range(-batch, len(index), batch):  # the first pass (start < 0) warms up, untimed
        if start == 0:
            _sync(device)
            t0 = time.perf_counter()
        x = images[index[max(start, 0):max(start, 0) + batch].to(device)].float().div(255)
        if x.shape[1] != channels:
            x = x.expand(-1, channels, -1, -1)
        for _ in range(2):
            pipeline(x)
    _sync(device)
    return len(index) / (time.perf_counter() - t0)
