"""Datasets: Fashion-MNIST (IDX files), CIFAR-10 (python batches), ImageFolder (ImageNet layout).

Every source yields uint8 CxHxW tensors and int labels. Files are looked for in standard places
first (Debian's `dataset-fashion-mnist` puts Fashion-MNIST in /usr/share/datasets/fashion-mnist);
only when none is found and `download` is on do we fetch like torchvision's `download=True`.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from simsiam.config import Config, DataConfig
from simsiam.errors import ConfigError, DataError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
NO_LABEL = -1  # the label of an image in an unlabelled collection


def cache_dir() -> Path:
    return Path(os.environ.get("SIMSIAM_CACHE", Path.home() / ".cache" / "simsiam"))


# --------------------------------------------------------------------------- sources


class ImageSource(Dataset):
    """Indexable images: `source[i] -> (uint8 CxHxW tensor, label)`; `labels` as an int64 tensor."""

    name: str
    classes: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int):
        return self.image(index), int(self.labels[index])


@dataclass
class TensorSource(ImageSource):
    """A whole split held in memory (Fashion-MNIST: 47 MB, CIFAR-10: 150 MB)."""

    name: str
    images: torch.Tensor  # N x C x H x W uint8
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def image(self, index: int) -> torch.Tensor:
        return self.images[index]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "TensorSource":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TensorSource(self.name, self.images[idx], self.labels[idx], self.classes)


class FolderSource(ImageSource):
    """ImageNet layout `root/<class>/<image>`; images decoded on access."""

    def __init__(self, root: Path) -> None:
        from torchvision.datasets import ImageFolder

        try:
            folder = ImageFolder(str(root), loader=lambda p: p)
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"image folder {root}: {exc}; {UNLABELLED_HINT}") from None
        self.name = "imagefolder"
        self.root = root
        self.classes = list(folder.classes)
        self.paths = [p for p, _ in folder.samples]
        self.labels = torch.tensor([y for _, y in folder.samples], dtype=torch.long)

    def image(self, index: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.v2.functional import pil_to_tensor

        path = self.paths[index]
        try:
            with Image.open(path) as im:
                return pil_to_tensor(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot decode image {path}: {exc}") from None


# --------------------------------------------------------------------------- IDX (MNIST format)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (raw or .gz); any truncation or bad magic is a DataError naming the file."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated (header cut short)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"IDX file {path} is truncated or padded: {len(raw)} bytes, expected {expected} "
                        f"for shape {dims}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_file(dirs: Sequence[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def _fashion_mnist_dirs(root: str | None) -> list[Path]:
    if root:
        return [Path(root), Path(root) / "FashionMNIST" / "raw"]
    return [DEBIAN_FASHION_MNIST, cache_dir() / "fashion-mnist", cache_dir() / "FashionMNIST" / "raw",
            Path("data/fashion-mnist")]


def load_fashion_mnist(split: str, root: str | None = None, download: bool = True) -> TensorSource:
    prefix = {"train": "train", "test": "t10k"}[split]
    dirs = _fashion_mnist_dirs(root)
    img_file = _find_file(dirs, f"{prefix}-images-idx3-ubyte")
    lbl_file = _find_file(dirs, f"{prefix}-labels-idx1-ubyte")
    if (img_file is None or lbl_file is None) and download and not root:
        _download("fashion-mnist", dirs)
        img_file = _find_file(dirs, f"{prefix}-images-idx3-ubyte")
        lbl_file = _find_file(dirs, f"{prefix}-labels-idx1-ubyte")
    if img_file is None or lbl_file is None:
        tried = ", ".join(str(d) for d in dirs)
        raise DataError(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz]) "
            f"not found in: {tried}. Install them with `apt-get install dataset-fashion-mnist`, "
            f"or set data.root to a directory that holds them"
        )
    images, labels = read_idx(img_file), read_idx(lbl_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{img_file} / {lbl_file}: shapes {images.shape} and {labels.shape} do not pair up")
    return TensorSource("fashion-mnist", torch.from_numpy(images.copy()).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), list(FASHION_MNIST_CLASSES))


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_dirs(root: str | None) -> list[Path]:
    bases = [Path(root)] if root else [cache_dir(), Path("data")]
    return [p for b in bases for p in (b / "cifar-10-batches-py", b)]


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from None


def load_cifar10(split: str, root: str | None = None, download: bool = True) -> TensorSource:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    dirs = _cifar_dirs(root)
    found = next((d for d in dirs if all((d / n).is_file() for n in names)), None)
    if found is None and download and not root:
        _download("cifar10", dirs)
        found = next((d for d in dirs if all((d / n).is_file() for n in names)), None)
    if found is None:
        raise DataError(f"CIFAR-10 {split} batches ({', '.join(names)}) not found in: "
                        f"{', '.join(str(d) for d in dirs)}; set data.root to the folder holding cifar-10-batches-py")
    xs, ys = [], []
    for n in names:
        batch = _unpickle(found / n)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = batch[b"labels"]
            xs.append(data.reshape(-1, 3, 32, 32))
        except (KeyError, ValueError) as exc:
            raise DataError(f"CIFAR-10 batch {found / n} is malformed: {exc!r}") from None
        if len(labels) != len(xs[-1]):
            raise DataError(f"CIFAR-10 batch {found / n}: {len(xs[-1])} images but {len(labels)} labels")
        ys.extend(labels)
    classes = list(CIFAR10_CLASSES)
    meta = found / "batches.meta"
    if meta.is_file():
        names_b = _unpickle(meta).get(b"label_names")
        if names_b:
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names_b]
    return TensorSource("cifar10", torch.from_numpy(np.concatenate(xs)), torch.tensor(ys, dtype=torch.long), classes)


# --------------------------------------------------------------------------- ImageFolder

UNLABELLED_HINT = "images without class folders train with `simsiam stage DIR` or `simsiam run --data DIR`"


def load_imagefolder(split: str, root: str | None) -> FolderSource:
    if not root:
        raise DataError("data.root must point to an ImageFolder directory (root/train/<class>/*.jpg)")
    base = Path(root)
    candidates = [base / split] + ([base / "val"] if split == "test" else [])
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        tried = ", ".join(str(c) for c in candidates)
        raise DataError(f"image folder split {split!r} not found: tried {tried}; {UNLABELLED_HINT}")
    return FolderSource(folder)


# --------------------------------------------------------------------------- download + dispatch


def _download(dataset: str, dirs: Sequence[Path]) -> None:
    """Fetch like torchvision's dataset classes, into the cache; offline is not an error here
    (the caller reports the paths it tried)."""
    from torchvision import datasets

    target = cache_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
        if dataset == "fashion-mnist":
            datasets.FashionMNIST(str(target), train=True, download=True)
            datasets.FashionMNIST(str(target), train=False, download=True)
        else:
            datasets.CIFAR10(str(target), train=True, download=True)
    except Exception:  # noqa: BLE001 - any network failure means "not available offline"
        return


def load_source(cfg: DataConfig, split: str) -> ImageSource:
    if split not in ("train", "test"):
        raise DataError(f"split must be train or test, got {split!r}")
    if cfg.source is not None and split == "train":
        # The core does not talk to object storage; adapters (CLI, flows) open staged data.
        raise DataError(f"data.source={cfg.source!r} is a staged dataset: open it with "
                        "simsiam.storage.StagedSource and pass train_source=..., as `simsiam pretrain` does")
    if cfg.dataset == "images":
        raise DataError(f"data.dataset=images ({cfg.root}) is read once staged: `simsiam stage {cfg.root}` then "
                        "data.source=<name>@latest, or `simsiam run --data <folder or s3:// prefix>`, which stages it")
    if cfg.dataset == "fashion-mnist":
        return load_fashion_mnist(split, cfg.root, cfg.download)
    if cfg.dataset == "cifar10":
        return load_cifar10(split, cfg.root, cfg.download)
    return load_imagefolder(split, cfg.root)


def local_source(cfg: Config, split: str, subset: int | None = None) -> ImageSource:
    """The local files of `cfg.data` (dataset/root), optionally the first `subset` samples."""
    if subset is not None and subset < 1:
        raise ConfigError(f"subset must be at least 1 sample, got {subset}")
    source = load_source(cfg.data.model_copy(update={"source": None, "test_source": None}), split)
    if subset is None:
        return source
    if not hasattr(source, "subset"):
        raise DataError("a subset works for in-memory datasets (fashion-mnist, cifar10), not imagefolder")
    return source.subset(range(min(subset, len(source))))


def check_local_data(cfg: Config, subset: int | None = None, batch_size: int | None = None) -> None:
    """The training data and the evaluation data can be read, and the training split fills a batch
    (`batch_size`: the smallest a sweep tries, default the config's): bad data fails here with one
    line, before any service starts. An S3 prefix is read once the store is open."""
    batch_size = batch_size or cfg.train.batch_size
    if cfg.eval.dataset:
        local_source(cfg.eval_as_data(), "test", subset)
    if cfg.data.dataset == "images":
        root = cfg.data.root or ""
        if not root.startswith("s3://") and not Path(root).is_dir():
            raise DataError(f"image folder {root or '(data.root unset)'} not found: give --data a folder of images "
                            "(any depth) or an s3://<bucket>/<prefix>/")
        return
    for split in ("train", "test"):
        n = len(local_source(cfg, split, subset))
        n = min(n, cfg.data.train_subset or n)
        if split == "train" and n < batch_size:
            what = f"--subset {subset} leaves" if subset else "the training split has"
            raise ConfigError(f"{what} {n} training samples, fewer than train.batch_size={batch_size}: "
                              "no full batch can be formed")


def subset_indices(n: int, k: int | None, seed: int) -> torch.Tensor:
    """A seeded random subset (class-balanced in expectation); all indices when k is None."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


# --------------------------------------------------------------------------- views


class ViewsDataset(Dataset):
    """`ds[i] -> (views, label)`. Each sample's augmentation is seeded by (seed, epoch, index), so
    the stream is identical whatever the worker count and after a resume mid-epoch."""

    def __init__(self, source: ImageSource, transform: Callable, indices: torch.Tensor | None = None,
                 seed: int = 0) -> None:
        self.source = source
        self.transform = transform
        self.indices = indices if indices is not None else torch.arange(len(source))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        img, label = self.source[index]
        return seeded_views(self.transform, img, self.seed, self.epoch, index), label


def seeded_views(transform: Callable, img: torch.Tensor, seed: int, epoch: int, index: int):
    """`transform(img)` with the CPU generator seeded by (seed, epoch, index): the same views whatever
    the worker, rank or batch the sample lands in."""
    with torch.random.fork_rng(devices=[]):  # transforms draw from the CPU generator only
        torch.default_generator.manual_seed(((seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**63)
        return transform(img)


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled order fixed by (seed, epoch); rank r of `world` takes every world-th sample of the
    same permutation (equal counts); `start` skips this rank's first samples for a mid-epoch resume."""

    def __init__(self, n: int, seed: int, epoch: int = 0, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.epoch, self.start, self.rank, self.world = n, seed, epoch, start, rank, world

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: (self.n // self.world) * self.world]
        return iter(perm[self.rank::self.world][self.start:].tolist())

    def __len__(self) -> int:
        return self.n // self.world - self.start
