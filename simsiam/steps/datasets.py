"""Data steps: the local files a config names, their content version, and staging them to S3."""

from __future__ import annotations

from typing import TYPE_CHECKING

from simsiam.config import Config, override_config
from simsiam.errors import ConfigError, DataError
from simsiam.results import Staged
from simsiam.steps.context import RunContext

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


def stage_name(cfg: Config, split: str = "train", name: str | None = None) -> str:
    """The name a staging of `split` goes under, checked: a bad one is one line, before any service."""
    from simsiam.storage.staging import check_dataset_name

    return check_dataset_name(name or f"{cfg.data.dataset}-{split}")


def stage(ctx: RunContext, split: str = "train", name: str | None = None, subset: int | None = None,
          source: ImageSource | None = None) -> Staged:
    """Stage one split of `cfg.data` to the store as a content-addressed version. Idempotent: a
    version already complete uploads nothing (`cached`), and an interrupted one resumes, skipping
    the shards already stored. `source`: the split's `local_source`, when the caller already read it."""
    from simsiam.storage import stage_dataset

    cfg = ctx.cfg
    name = stage_name(cfg, split, name)
    source = local_source(cfg, split, subset) if source is None else source
    before, root = ctx.store.puts, cfg.data.root
    ref, manifest = stage_dataset(source, ctx.store, name, split, cfg.storage.shard_size,
                                  source_desc=f"{cfg.data.dataset}:{split}" + (f":{root}" if root else ""),
                                  progress=ctx.progress)
    uploaded = ctx.store.puts - before
    return Staged(uri=ref.uri, manifest=ref.manifest_uri, name=ref.name, version=ref.version, split=split,
                  samples=manifest["num_samples"], shards=len(manifest["shards"]), bytes=manifest["total_bytes"],
                  uploaded_objects=uploaded, cached=uploaded == 0)


def with_staged(cfg: Config, train: Staged | None, test: Staged | None) -> Config:
    """The config pointed at staged versions (data.source / data.test_source)."""
    sets = ([f"data.source={train.spec}"] if train else []) + ([f"data.test_source={test.spec}"] if test else [])
    return override_config(cfg, sets) if sets else cfg


def on_staged_data(ctx: RunContext, test: bool = True) -> RunContext:
    """Ray workers read staged data from S3, on any node, as in `simsiam run`: without a `data.source`,
    stage the local train split (and with `test` the test split, for the kNN monitor) first; a
    version already staged uploads nothing."""
    if ctx.cfg.data.source:
        return ctx
    train = stage(ctx, "train")
    return ctx.with_config(with_staged(ctx.cfg, train, stage(ctx, "test") if test and not ctx.cfg.data.test_source
                                       else None))
