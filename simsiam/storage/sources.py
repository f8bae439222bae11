"""The store and the image sources a config names: staged versions in S3 (`data.source`,
`data.test_source`) or, without them, the local dataset files. The one place that turns a config
into sources, for in-process runs and Ray workers alike."""

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
    return open_store(settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state))


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
    train = shard_stream(store, ref, manifest) if streams(cfg.data, manifest) else StagedSource(store, ref.uri)
    if not need_test:
        return train, None
    return train, StagedSource(store, cfg.data.test_source) if cfg.data.test_source else load_source(cfg.data, "test")
