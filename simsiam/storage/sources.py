"""The store and the image sources a config names: staged versions in S3 (`data.source`,
`data.test_source`) or, without them, the local dataset files. The one place that turns a config
into sources, for in-process runs and Ray workers alike."""

from __future__ import annotations

from pathlib import Path

from simsiam.config import Config
from simsiam.data import ImageSource, load_source
from simsiam.storage.client import ObjectStore, open_store, settings_from_env
from simsiam.storage.reader import StagedSource


def store_for(cfg: Config, state: str | Path | None = None) -> ObjectStore:
    """The bucket of `cfg.storage` (the embedded SeaweedFS of `state` when no endpoint is set)."""
    return open_store(settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state))


def open_sources(cfg: Config, need_test: bool,
                 state: str | Path | None = None) -> tuple[ImageSource, ImageSource | None]:
    """(train, test) sources; test is None unless `need_test`. A staged training version may come
    with a local test split (no `data.test_source`)."""
    if cfg.data.source is None:
        return load_source(cfg.data, "train"), (load_source(cfg.data, "test") if need_test else None)
    store = store_for(cfg, state)
    train = StagedSource(store, cfg.data.source)
    if not need_test:
        return train, None
    return train, StagedSource(store, cfg.data.test_source) if cfg.data.test_source else load_source(cfg.data, "test")
