"""The store and the image sources a config names: the training data (staged versions in S3,
`data.source` and `data.test_source`, or else the local dataset files) and the labelled data that
judges the encoder (`eval.*`). The one place that turns a config into sources, for in-process runs
and Ray workers alike."""

from __future__ import annotations

from pathlib import Path

from simsiam.config import Config, DataConfig
from simsiam.data import ImageSource, load_source
from simsiam.errors import ConfigError
from simsiam.storage.client import ObjectStore, open_store, settings_from_env
from simsiam.storage.reader import StagedSource, decoded_bytes, resolve_dataset, shard_stream
from simsiam.streaming import ShardStream


def store_for(cfg: Config, state: str | Path | None = None) -> ObjectStore:
    """The bucket of `cfg.storage` (the embedded SeaweedFS of `state` when no endpoint is set)."""
    return open_store(settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state,
                                        cfg.storage.outage_budget_s))


def streams(data: DataConfig, manifest: dict) -> bool:
    """Whether workers stream the version (`data.stream`; auto: when it is over data.memory_budget_mb)."""
    if data.stream == "auto":
        return decoded_bytes(manifest) > data.memory_budget_mb * 2**20
    return data.stream


def open_sources(cfg: Config, need_test: bool, state: str | Path | None = None,
                 store: ObjectStore | None = None) -> tuple[ImageSource | ShardStream, ImageSource | None]:
    """(train, test) sources; test is None unless `need_test`. A staged training version may come
    with a local test split (no `data.test_source`); the train split is a ShardStream when
    `streams()` says so. `store`: the bucket of `cfg.storage`, when the caller holds it open."""
    if cfg.data.source is None:
        if cfg.data.stream is True:
            raise ConfigError("data.stream=true streams a staged version: set data.source (stage it with "
                              "`simsiam stage`)")
        return load_source(cfg.data, "train"), (load_source(cfg.data, "test") if need_test else None)
    store = store or store_for(cfg, state)
    ref, manifest = resolve_dataset(store, cfg.data.source)
    if not manifest.get("labels", True) and cfg.data.dataset != "images":
        raise ConfigError(f"data.source={cfg.data.source} is an unlabelled image collection: set data.dataset=images "
                          "(and name labelled evaluation data with eval.dataset)")
    train = shard_stream(store, ref, manifest) if streams(cfg.data, manifest) else StagedSource(store, ref.uri)
    if not need_test or cfg.data.dataset == "images":
        return train, None
    return train, StagedSource(store, cfg.data.test_source) if cfg.data.test_source else load_source(cfg.data, "test")


def eval_sources(cfg: Config, state: str | Path | None = None,
                 store: ObjectStore | None = None) -> tuple[ImageSource, ImageSource] | None:
    """The labelled evaluation data that `eval.*` names apart from the training data: (its train split,
    the kNN bank and the probe's fit; its test split). None when eval.* names none."""
    if cfg.eval.source or cfg.eval.test_source:
        if not (cfg.eval.source and cfg.eval.test_source):
            raise ConfigError("eval.source and eval.test_source name the evaluation data's two splits: set both")
        store = store or store_for(cfg, state)
        return tuple(_labelled(StagedSource(store, spec), spec) for spec in (cfg.eval.source, cfg.eval.test_source))
    if cfg.eval.dataset:
        data = cfg.eval_as_data().data
        return load_source(data, "train"), load_source(data, "test")
    return None


def evaluation_sources(cfg: Config, state: str | Path | None = None,
                       store: ObjectStore | None = None) -> tuple[ImageSource | ShardStream, ImageSource]:
    """What the evaluation after training measures on: the data eval.* names, else the training data's
    own splits. An image collection with no evaluation data is a ConfigError: there is nothing to
    measure on."""
    named = eval_sources(cfg, state, store)
    if named is None and cfg.data.dataset == "images":
        raise ConfigError(f"no labelled data to evaluate an encoder trained on {cfg.data.root or cfg.data.source} "
                          "on: name some with eval.dataset (--eval fashion-mnist, cifar10[:DIR] or imagefolder:DIR)")
    return named if named is not None else open_sources(cfg, True, state, store)


def _labelled(source: StagedSource, spec: str) -> StagedSource:
    if not source.manifest.get("labels", True):
        raise ConfigError(f"evaluation data {spec} is an unlabelled image collection: it cannot judge an encoder")
    return source
