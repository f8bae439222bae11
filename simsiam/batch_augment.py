"""The two-view recipes of `simsiam.augment`, as batched tensor ops on the training device.

Input: a uint8 N x C x H x W batch on any device. Every random choice (crop box, flip, jitter
factors and order, grayscale, blur sigma) is per sample and comes from `uniforms`, a counter-based
hash of (seed, epoch, index, view, slot): a sample's views are a pure function of those, whatever
batch, rank or worker count it lands in, so a resume continues bit-identically.

The sampling follows torchvision v2 (RandomResizedCrop's 10 tries and centre fallback, ColorJitter's
factor ranges and per-call random order, RandomApply/RandomGrayscale probabilities, GaussianBlur's
kernel), tested against it in tests/test_batch_augment.py. Resizing is bilinear like v2's
resized_crop when a crop grows; a crop that shrinks goes through `torchvision.ops.roi_align`, whose
several taps per output pixel are the antialiasing.

Why not kornia.augmentation: on 2 CPU cores the grey recipe ran at 3.5k img/s there against 9.7k
here (`bench/throughput.py`, augment_*_img_per_s), and its parameters come from its own sampler,
while ours come straight from the hash, which is what exact resume needs. Hue conversions are
torchvision's own kernels; only crop sampling, jitter dispatch and the per-sample blur are ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import roi_align

from simsiam.augment import NORM_STATS, Recipe

CROP_TRIES = 10
# Slot layout of the per-(sample, view) uniforms.
S_AREA, S_RATIO = 0, CROP_TRIES  # 10 + 10
S_TOP, S_LEFT, S_FLIP = 2 * CROP_TRIES, 2 * CROP_TRIES + 1, 2 * CROP_TRIES + 2
S_JITTER_P, S_JITTER, S_ORDER = 23, 24, 28  # 1 + 4 factors + 4 order keys
S_GREY, S_BLUR_P, S_SIGMA = 32, 33, 34
SLOTS = 35
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that spreads every input bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, epoch: int, index: torch.Tensor, view: int, slots: int = SLOTS) -> torch.Tensor:
    """N x slots float64 uniforms in [0, 1), a pure function of (seed, epoch, index[n], view, slot)."""
    idx = index.detach().cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _mix(_mix(_mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) ^ np.uint64(epoch)) ^ np.uint64(view))
        x = _mix(key ^ _mix(idx + np.uint64(0x9E3779B97F4A7C15)))[:, None]
        x = _mix(x ^ (np.arange(slots, dtype=np.uint64)[None, :] * np.uint64(0xD6E8FEB86659FD93)))
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def crop_boxes(u: torch.Tensor, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop.get_params for every row of `u`: N x 4 (top, left, h, w), as float64."""
    area = height * width
    target = area * (scale[0] + u[:, S_AREA:S_AREA + CROP_TRIES] * (scale[1] - scale[0]))
    log_r = math.log(ratio[0]) + u[:, S_RATIO:S_RATIO + CROP_TRIES] * (math.log(ratio[1]) - math.log(ratio[0]))
    w = torch.round(torch.sqrt(target * torch.exp(log_r)))
    h = torch.round(torch.sqrt(target / torch.exp(log_r)))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.int8).argmax(1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    fw, fh = _fallback_size(height, width, ratio)
    found = ok.any(1)
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    top = torch.where(found, torch.floor(u[:, S_TOP] * (height - h + 1)), torch.floor((height - h) / 2))
    left = torch.where(found, torch.floor(u[:, S_LEFT] * (width - w + 1)), torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], 1)


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    in_ratio = width / height
    if in_ratio < min(ratio):
        return float(width), float(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return float(round(height * max(ratio))), float(height)
    return float(width), float(height)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each float image to its (top, left, h, w) box and resize it to size x size, bilinear.

    Crops no larger than the output are upsampled like v2.functional.resized_crop (edge taps clamp
    to the crop); larger ones go through roi_align, whose several taps per pixel are the antialias."""
    boxes = boxes.to(x.device, torch.float32)
    big = (boxes[:, 2] > size) | (boxes[:, 3] > size)
    out = _upsample_crops(x, boxes, size)
    if big.any():
        rows = torch.nonzero(big).squeeze(1)
        top, left, h, w = boxes[rows].unbind(1)
        rois = torch.stack([rows.to(torch.float32), left, top, left + w, top + h], 1)
        out[rows] = roi_align(x, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out


def _taps(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source taps (i0, i1, weight of i1) of `size` outputs over [start, start + length)."""
    pos = (torch.arange(size, device=start.device, dtype=torch.float32)[None, :] + 0.5) * (length / size)[:, None] - 0.5
    pos = torch.minimum(pos.clamp(min=0), (length - 1)[:, None])
    i0 = pos.floor()
    i1 = torch.minimum(i0 + 1, (length - 1)[:, None])
    return (start[:, None] + i0).long(), (start[:, None] + i1).long(), pos - i0


def _upsample_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    n, c, height, width = x.shape
    top, left, h, w = boxes.unbind(1)
    y0, y1, wy = _taps(top, h, size)
    x0, x1, wx = _taps(left, w, size)

    def rows(i: torch.Tensor) -> torch.Tensor:
        return x.gather(2, i[:, None, :, None].expand(n, c, size, width))

    r = torch.lerp(rows(y0), rows(y1), wy[:, None, :, None])  # n x c x size x width

    def cols(i: torch.Tensor) -> torch.Tensor:
        return r.gather(3, i[:, None, None, :].expand(n, c, size, size))

    return torch.lerp(cols(x0), cols(x1), wx[:, None, None, :])


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * a + (1 - f) * b).clamp_(0, 1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), f)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else _blend(x, _grey(x), f)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    # torchvision's own batched HSV conversions (the kernels behind v2.functional.adjust_hue).
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    if x.shape[1] == 1:
        return x
    h, s, v = _rgb_to_hsv(x).unbind(1)
    h = (h + f[:, :, 0]).remainder_(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), 1))


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


def color_jitter(x: torch.Tensor, u: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """v2.RandomApply([v2.ColorJitter(*recipe.jitter)], p) with per-sample factors and order."""
    applied = u[:, S_JITTER_P] < recipe.jitter_p
    order = u[:, S_ORDER:S_ORDER + 4].argsort(1)  # v2.ColorJitter: torch.randperm(4) per call
    for pos in range(4):
        for op, strength in enumerate(recipe.jitter):
            if strength == 0:
                continue
            rows = torch.nonzero(applied & (order[:, pos] == op)).squeeze(1)
            if len(rows) == 0:
                continue
            a = u[rows, S_JITTER + op]
            f = (a - 0.5) * 2 * strength if op == 3 else 1 - strength + a * 2 * strength
            x[rows] = _JITTER_OPS[op](x[rows], f.to(x.dtype).view(-1, 1, 1, 1))
    return x


def random_grey(x: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
    rows = torch.nonzero(u[:, S_GREY] < p).squeeze(1)
    if len(rows) and x.shape[1] == 3:
        x[rows] = _grey(x[rows]).expand(-1, 3, -1, -1)
    return x


def gaussian_blur(x: torch.Tensor, u: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """v2.RandomApply([v2.GaussianBlur(k, sigma)], p): per-sample sigma, reflect padding, separable."""
    rows = torch.nonzero(u[:, S_BLUR_P] < recipe.blur_p).squeeze(1)
    if len(rows) == 0:
        return x
    lo, hi = recipe.blur_sigma
    sigma = (lo + u[rows, S_SIGMA] * (hi - lo)).to(x.dtype)
    k = recipe.blur_kernel
    half = (k - 1) * 0.5
    taps = torch.linspace(-half, half, k, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # n x k
    sub = x[rows]
    n, c, h, w = sub.shape
    weight = kernel.repeat_interleave(c, 0)  # one filter per (sample, channel)
    flat = torch.nn.functional.pad(sub.reshape(1, n * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, weight.view(n * c, 1, 1, k), groups=n * c)
    flat = torch.nn.functional.conv2d(flat, weight.view(n * c, 1, k, 1), groups=n * c)
    x[rows] = flat.view(n, c, h, w)
    return x


def _stats(dataset: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = NORM_STATS[dataset]
    if len(mean) != channels:  # as simsiam.augment._normalize: the source's stats averaged/repeated
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return mean, std


def normalise(x: torch.Tensor, dataset: str, channels: int) -> torch.Tensor:
    """MatchChannels + Normalize of `simsiam.augment._normalize`, on a float batch in [0, 1]."""
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else _grey(x)
    mean, std = _stats(dataset, channels)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def denormalise(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """Normalised views (.. x C x H x W) back to [0, 1] images, for pictures."""
    mean, std = _stats(dataset, x.shape[-3])
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x.cpu() * s + m).clamp(0, 1)


@dataclass(frozen=True)
class BatchAugment:
    """`simsiam.augment.train_transform(recipe, dataset, size, channels, crop_min_scale)` for batches."""

    recipe: str
    dataset: str
    image_size: int
    channels: int
    crop_min_scale: float = 0.2

    def __call__(self, images: torch.Tensor, u: torch.Tensor, normalise_output: bool = True) -> torch.Tensor:
        """images: uint8 N x C x H x W; u: `uniforms(...)` rows for these samples -> float32 views."""
        recipe = Recipe.named(self.recipe)
        x = images.to(torch.float32).div_(255)
        u = u.to(x.device)  # once per batch: every op below reads its parameters on the device
        boxes = crop_boxes(u, x.shape[2], x.shape[3], (self.crop_min_scale, 1.0))
        x = resized_crops(x, boxes, self.image_size)
        flip = (u[:, S_FLIP] < 0.5).view(-1, 1, 1, 1)
        if recipe.grey_p == 0:  # grey recipe: crop, flip, jitter (augment.train_transform's order)
            x = color_jitter(torch.where(flip, x.flip(-1), x), u, recipe)
        else:  # cifar / imagenet: crop, jitter, grayscale, [blur], flip
            x = random_grey(color_jitter(x, u, recipe), u, recipe.grey_p)
            if recipe.blur_p:
                x = gaussian_blur(x, u, recipe)
            x = torch.where(flip, x.flip(-1), x)
        return normalise(x, self.dataset, self.channels) if normalise_output else x
