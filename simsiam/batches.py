"""Training batches made on the training device: a split held as one uint8 tensor, batches as index
gathers, both views from `simsiam.batch_augment` (no per-sample Python in the loop).

`data.augment_on` picks this path (`device`) or the per-sample torchvision path in DataLoader
workers (`workers`, for images of mixed sizes that stream from files); `auto` takes the device path
whenever the split is one fixed-size tensor within `data.memory_budget_mb`."""

from __future__ import annotations

from typing import Iterator

import torch

from simsiam.batch_augment import BatchAugment, denormalise, uniforms
from simsiam.config import DataConfig
from simsiam.data import EpochSampler, ImageSource, ViewsDataset
from simsiam.errors import ConfigError
from simsiam.streaming import StreamViews


def in_memory_images(source: ImageSource) -> torch.Tensor | None:
    """The split as one uint8 N x C x H x W tensor, or None when it is read image by image."""
    images = getattr(source, "images", None)
    return images if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 else None


def augment_path(cfg: DataConfig, source: ImageSource) -> tuple[str, str]:
    """("device" | "workers", why) for this config and source; a forced device path that cannot
    hold the data is a ConfigError naming the key to change."""
    images = in_memory_images(source)
    budget = cfg.memory_budget_mb * 2**20
    if images is None:
        why = f"{source.name} images are decoded one by one (files of mixed sizes)"
    elif images.nbytes > budget:
        why = (f"{source.name} needs {images.nbytes / 2**20:.0f} MiB in memory, over "
               f"data.memory_budget_mb={cfg.memory_budget_mb}")
    else:
        return ("workers", "data.augment_on=workers") if cfg.augment_on == "workers" else (
            "device", f"{source.name} held in memory ({images.nbytes / 2**20:.0f} MiB)")
    if cfg.augment_on == "device":
        raise ConfigError(f"data.augment_on=device: {why}; raise data.memory_budget_mb or use "
                          "data.augment_on=workers")
    return "workers", why


class DeviceViews:
    """`len()` samples (the subset `indices` of `source`), served as batches of `n_views` views."""

    def __init__(self, source: ImageSource, indices: torch.Tensor, augment: BatchAugment, n_views: int,
                 seed: int, device: torch.device) -> None:
        images = in_memory_images(source)
        assert images is not None, "augment_path() chooses DeviceViews only for in-memory sources"
        # On CUDA the whole split lives on the GPU (Fashion-MNIST 47 MB, CIFAR-10 150 MB): a batch is a gather.
        self.images = images.to(device) if device.type == "cuda" else images
        self.labels, self.indices = source.labels, indices
        self.augment, self.n_views, self.seed = augment, n_views, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def views(self, index: torch.Tensor, epoch: int | None = None) -> list[torch.Tensor]:
        """The views of source images `index` in `epoch`: a pure function of (seed, epoch, index)."""
        epoch = self.epoch if epoch is None else epoch
        x = self.images[index.to(self.images.device)]
        return [self.augment(x, uniforms(self.seed, epoch, index, v)) for v in range(self.n_views)]

    def batches(self, sampler: EpochSampler, batch: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        order = torch.as_tensor(list(sampler), dtype=torch.long)
        for start in range(0, len(order) - batch + 1, batch):  # drop_last, like the DataLoader path
            index = self.indices[order[start:start + batch]]
            yield self.views(index), self.labels[index]


def preview(dataset: DeviceViews | ViewsDataset | StreamViews, n: int = 8) -> torch.Tensor:
    """The first n training images' epoch-0 views as n x views x C x H x W in [0, 1]: what the network sees
    (of a streamed version: n images of one seeded shard)."""
    return preview_with_originals(dataset, n)[0]


def preview_with_originals(dataset: DeviceViews | ViewsDataset | StreamViews, n: int = 8,
                           norm: str | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`preview`'s views and the n source images they were drawn from, each C x H x W in [0, 1] at its
    own size (before the crop and resize): what the augmentation started from. `norm`: the dataset
    whose statistics normalised the views (default: the source's own)."""
    if isinstance(dataset, StreamViews):
        dataset = ViewsDataset(dataset.stream.sample_source(n, dataset.seed), dataset.transform, seed=dataset.seed)
    n = min(n, len(dataset))
    if isinstance(dataset, DeviceViews):
        index = dataset.indices[:n]
        views = dataset.views(index, 0)
        originals = dataset.images[index.to(dataset.images.device)].cpu().float().div(255)
        return torch.stack([denormalise(v, norm or dataset.augment.dataset) for v in views], 1), list(originals)
    epoch, dataset.epoch = dataset.epoch, 0
    rows = [torch.stack(dataset[i][0]) for i in range(n)]
    dataset.epoch = epoch
    originals = [dataset.source.image(int(dataset.indices[i])).float().div(255) for i in range(n)]
    return denormalise(torch.stack(rows), norm or dataset.source.name), originals
