"""Data steps: the local files a config names, their content version, and staging them to S3."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from simsiam import faults
from simsiam.config import Config, override_config
from simsiam.errors import ConfigError, DataError

if TYPE_CHECKING:
    from simsiam.data import ImageSource


def local_source(cfg: Config, split: str, subset: int | None = None) -> ImageSource:
    """The local files of `cfg.data` (dataset/root), optionally the first `subset` samples."""
    if subset is not None and subset < 1:
        raise ConfigError(f"subset must be at least 1 sample, got {subset}")
    from simsiam.data import load_source

    source = load_source(cfg.data.model_copy(update={"source": None, "test_source": None}), split)
    if subset is None:
        return source
    if not hasattr(source, "subset"):
        raise DataError("a subset works for in-memory datasets (fashion-mnist, cifar10), not imagefolder")
    return source.subset(range(min(subset, len(source))))


def check_local_data(cfg: Config, subset: int | None = None, batch_size: int | None = None) -> None:
    """Both splits can be read, and the training split fills a batch (`batch_size`: the smallest a
    sweep tries, default the config's): bad data fails here with one line, before any service starts."""
    batch_size = batch_size or cfg.train.batch_size
    for split in ("train", "test"):
        n = len(local_source(cfg, split, subset))
        n = min(n, cfg.data.train_subset or n)
        if split == "train" and n < batch_size:
            what = f"--subset {subset} leaves" if subset else "the training split has"
            raise ConfigError(f"{what} {n} training samples, fewer than train.batch_size={batch_size}: "
                              "no full batch can be formed")


def dataset_version(cfg: Config, split: str, subset: int | None = None) -> str:
    """The content-hash version staging would give this source (cheap: no upload)."""
    from simsiam.storage.staging import source_fingerprint

    return source_fingerprint(local_source(cfg, split, subset), cfg.storage.shard_size)


def stage_name(cfg: Config, split: str = "train", name: str | None = None) -> str:
    """The name a staging of `split` goes under, checked: a bad one is one line, before any service."""
    from simsiam.storage.staging import check_dataset_name

    return check_dataset_name(name or f"{cfg.data.dataset}-{split}")


def stage(cfg: Config, split: str = "train", name: str | None = None, subset: int | None = None,
          state: str | Path | None = None, progress: bool = False, source: ImageSource | None = None) -> dict[str, Any]:
    """Stage one split of `cfg.data` to S3 (idempotent: a staged version uploads nothing). `source`:
    the split's `local_source`, when the caller already read it."""
    from simsiam.storage import stage_dataset, store_for

    name = stage_name(cfg, split, name)
    source = local_source(cfg, split, subset) if source is None else source
    store = store_for(cfg, state)
    before, root = store.puts, cfg.data.root
    ref, manifest = stage_dataset(source, store, name, split, cfg.storage.shard_size,
                                  source_desc=f"{cfg.data.dataset}:{split}" + (f":{root}" if root else ""),
                                  progress=progress, on_shard=lambda i, key: faults.io_fault("stage"))
    return {"uri": ref.uri, "manifest": ref.manifest_uri, "name": ref.name, "version": ref.version,
            "spec": f"{ref.name}@{ref.version}", "split": split, "samples": manifest["num_samples"],
            "shards": len(manifest["shards"]), "bytes": manifest["total_bytes"],
            "uploaded_objects": store.puts - before}


def is_staged(cfg: Config, staged: dict, state: str | Path | None = None) -> bool:
    """Does the store still hold this staged version's manifest? (A cached staging result may
    outlive the data, e.g. after the state dir was wiped.)"""
    from simsiam.storage import store_for

    store = store_for(cfg, state)
    return store.head(staged["manifest"].removeprefix(f"s3://{store.bucket}/")) is not None


def with_staged(cfg: Config, train: dict | None, test: dict | None) -> Config:
    """The config pointed at staged versions (data.source / data.test_source)."""
    sets = ([f"data.source={train['spec']}"] if train else []) + ([f"data.test_source={test['spec']}"] if test else [])
    return override_config(cfg, sets) if sets else cfg


def on_staged_data(cfg: Config, state: str | Path | None = None, test: bool = True) -> Config:
    """Ray workers read staged data from S3, on any node, as in `simsiam run`: without a `data.source`,
    stage the local train split (and with `test` the test split, for the kNN monitor) first; a
    version already staged uploads nothing."""
    if cfg.data.source:
        return cfg
    train = stage(cfg, "train", state=state)
    return with_staged(cfg, train, stage(cfg, "test", state=state) if test and not cfg.data.test_source else None)
