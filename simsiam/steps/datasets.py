"""Data steps: staging to S3 the splits of a labelled dataset, an image collection (a folder or an S3
prefix), or the labelled evaluation data, and pointing the config at what was staged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from simsiam.config import Config, override_config
from simsiam.results import Staged
from simsiam.steps.context import RunContext

if TYPE_CHECKING:
    from simsiam.data import ImageSource


def stage(ctx: RunContext, split: str = "train", name: str | None = None, subset: int | None = None,
          source: ImageSource | None = None, of: Literal["data", "eval"] = "data") -> Staged:
    """Stage one split of the training data (`of="data"`) or of the labelled evaluation data
    (`of="eval"`) to the store as a content-addressed version. Idempotent: a version already
    complete uploads nothing (`cached`), and an interrupted one resumes, skipping what is stored.
    `source`: the split's `local_source`, when the caller already read it."""
    from simsiam.data import local_source
    from simsiam.storage import stage_dataset
    from simsiam.storage.staging import stage_name

    cfg = ctx.cfg.eval_as_data() if of == "eval" else ctx.cfg
    if cfg.data.dataset == "images":
        return stage_images(ctx, cfg.data.root, name, subset)
    name = stage_name(cfg, split, name)
    source = local_source(cfg, split, subset) if source is None else source
    before, root = ctx.store.puts, cfg.data.root
    ref, manifest = stage_dataset(source, ctx.store, name, split, cfg.storage.shard_size,
                                  source_desc=f"{cfg.data.dataset}:{split}" + (f":{root}" if root else ""),
                                  progress=ctx.progress)
    return Staged.of(manifest, ref.manifest_uri, ctx.store.puts - before)


def stage_images(ctx: RunContext, root: str, name: str | None = None, subset: int | None = None) -> Staged:
    """Stage the images of a folder (any depth) or an S3 prefix (read with the store's endpoint and
    credentials) as a version that keeps the unchanged shards of the one before
    (`simsiam.storage.unlabelled`); `subset`: the first N files only."""
    from simsiam.storage.staging import check_dataset_name
    from simsiam.storage.unlabelled import collection_items, collection_name, stage_collection

    ref, manifest, done = stage_collection(collection_items(root, ctx.bucket), ctx.store,
                                           check_dataset_name(name or collection_name(root)), root,
                                           ctx.cfg.storage.shard_size, ctx.cfg.storage.max_image_side, subset,
                                           ctx.progress)
    return Staged.of(manifest, ref.manifest_uri, done.uploaded_objects, uploaded_bytes=done.uploaded_bytes,
                     reused_shards=done.reused_shards)


def with_staged(cfg: Config, train: Staged | None, test: Staged | None, of: Literal["data", "eval"] = "data") -> Config:
    """The config pointed at staged versions (data.source / data.test_source, or eval.*)."""
    sets = ([f"{of}.source={train.spec}"] if train else []) + ([f"{of}.test_source={test.spec}"] if test else [])
    return override_config(cfg, sets) if sets else cfg


def on_staged_data(ctx: RunContext, test: bool = True) -> RunContext:
    """Ray workers read staged data from S3, on any node, as in `simsiam run`: without a `data.source`,
    stage the training data (and with `test` the test split of a labelled dataset, for the kNN
    monitor), and the evaluation data that eval.dataset names; a version already staged uploads nothing."""
    cfg = ctx.cfg
    if not cfg.data.source:
        train = stage(ctx, "train")
        with_test = test and not cfg.data.test_source and cfg.data.dataset != "images"
        cfg = with_staged(cfg, train, stage(ctx, "test") if with_test else None)
    if cfg.eval.dataset and not cfg.eval.source:
        cfg = with_staged(cfg, stage(ctx, "train", of="eval"), stage(ctx, "test", of="eval"), of="eval")
    return ctx.with_config(cfg)
