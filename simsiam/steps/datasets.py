"""Data steps: staging to S3 the splits of a labelled dataset, an image collection (a folder or an S3
prefix), or the labelled evaluation data, and pointing the config at what was staged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Literal

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


def on_staged_data(ctx: RunContext, subset: int | None = None,
                   stage: Callable[..., Staged] = stage) -> tuple[RunContext, dict[str, Staged]]:
    """Training reads staged data from S3, on any node: stage the training data (a labelled dataset's
    two splits, or an image collection) unless data.source names a staged version, and the labelled
    evaluation data eval.dataset names unless eval.source does. Returns the context pointed at the
    versions, and what was staged by name (`stage`: the step itself, or the pipeline's task of it).
    A version already staged uploads nothing."""
    cfg, staged = ctx.cfg, {}
    if not cfg.data.source:
        splits = ["train"] + (["test"] if cfg.data.dataset != "images" and not cfg.data.test_source else [])
        staged = {split: stage(ctx, split, subset=subset) for split in splits}
        cfg = with_staged(cfg, staged["train"], staged.get("test"))
    if cfg.eval.dataset and not cfg.eval.source:
        judged = {split: stage(ctx, split, subset=subset, of="eval") for split in ("train", "test")}
        cfg = with_staged(cfg, judged["train"], judged["test"], of="eval")
        staged |= {f"eval-{split}": s for split, s in judged.items()}
    return ctx.with_config(cfg), staged
