"""Two-view augmentation recipes (torchvision transforms.v2, on uint8 CxHxW tensors).

- imagenet: RandomResizedCrop(224, scale=(0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8,
  grayscale p=0.2, Gaussian blur p=0.5, flip (official main_simsiam.py).
- cifar: the same without blur at 32 px (paper App. D).
- grey (Fashion-MNIST): crop scale (0.2, 1), flip, brightness/contrast jitter 0.4 p=0.8.
  Without the jitter the two views share their intensity histogram, a shortcut the network
  takes instead of learning shape (docs/benchmarks.md, "Why the grey recipe jitters").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

# Per-dataset channel statistics for Normalize.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORM_STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": IMAGENET_STATS,
    "images": IMAGENET_STATS,  # a user's collection: ImageNet's, as usual
    "imagenet": IMAGENET_STATS,
}


@dataclass(frozen=True)
class Recipe:
    """A recipe's numbers, the one source for both implementations: `train_transform` (per sample,
    torchvision) and `simsiam.batch_augment.BatchAugment` (batched, on the training device)."""

    jitter: tuple[float, float, float, float]  # ColorJitter brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grey_p: float = 0.0
    blur_p: float = 0.0
    blur_kernel: int = 23
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @staticmethod
    def named(name: str) -> "Recipe":
        if name not in RECIPES:
            raise ValueError(f"unknown augmentation recipe {name!r}; allowed: {', '.join(RECIPES)}")
        return RECIPES[name]


RECIPES = {
    "grey": Recipe(jitter=(0.4, 0.4, 0.0, 0.0)),
    "cifar": Recipe(jitter=(0.4, 0.4, 0.4, 0.1), grey_p=0.2),
    "imagenet": Recipe(jitter=(0.4, 0.4, 0.4, 0.1), grey_p=0.2, blur_p=0.5),
}


class MatchChannels(torch.nn.Module):
    """Grey -> RGB by repetition, RGB -> grey by luminance, so any data fits the backbone stem."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[-3]
        if c == self.channels:
            return img
        if c == 1:
            return img.expand(*img.shape[:-3], self.channels, *img.shape[-2:])
        if self.channels == 1:
            return v2.functional.rgb_to_grayscale(img, num_output_channels=1)
        raise ValueError(f"cannot map {c} image channels to {self.channels}")


def _normalize(dataset: str, channels: int) -> list:
    mean, std = NORM_STATS[dataset]
    if len(mean) != channels:  # stats of the source repeated/averaged to the target channels
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return [MatchChannels(channels), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def train_transform(recipe: str, dataset: str, image_size: int, channels: int,
                    crop_min_scale: float = 0.2) -> v2.Compose:
    r = Recipe.named(recipe)
    crop = v2.RandomResizedCrop(image_size, scale=(crop_min_scale, 1.0), antialias=True)
    flip = v2.RandomHorizontalFlip()
    jitter = v2.RandomApply([v2.ColorJitter(*r.jitter)], p=r.jitter_p)
    if r.grey_p == 0:  # grey images: the flip before the jitter (both commute with it)
        ops = [crop, flip, jitter]
    else:
        ops = [crop, jitter, v2.RandomGrayscale(p=r.grey_p)]
        if r.blur_p:
            ops.append(v2.RandomApply([v2.GaussianBlur(kernel_size=r.blur_kernel, sigma=r.blur_sigma)], p=r.blur_p))
        ops.append(flip)
    return v2.Compose(ops + _normalize(dataset, channels))


def eval_transform(recipe: str, dataset: str, image_size: int, channels: int) -> v2.Compose:
    """Deterministic view for features: resize 256/224 + centre crop on ImageNet, resize elsewhere."""
    if recipe == "imagenet":
        ops = [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    else:
        ops = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(ops + _normalize(dataset, channels))


class MultiView:
    """Draw `n_views` independent augmentations of one image."""

    def __init__(self, transform: v2.Compose, n_views: int = 2) -> None:
        self.transform = transform
        self.n_views = n_views

    def __call__(self, img: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(img) for _ in range(self.n_views)]
