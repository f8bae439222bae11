"""The run context: what one entry point (a CLI command, or a flow run started directly or by a
deployment) resolved and opened, once, for every step below it. Steps receive it; none of them
resolves the config again or starts a service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from simsiam.config import Config


class RunContext(BaseModel):
    """The resolved config, the state dir of the embedded services, the tracking URI every step logs
    to (None: not tracked) and the Prefect flow runs carrying this run; and, opened on first use
    and then shared, the handles: the object store of `cfg.storage` and an MLflow client. Handles
    are never serialized (a flow run's parameters hold the rest), and a test may replace them
    with wrapped ones, which is how tests make a service fail."""

    model_config = ConfigDict(frozen=True)

    cfg: Config
    state: Path
    tracking_uri: str | None = None
    progress: bool = False  # progress bars (or lines) on long work
    flow_runs: tuple[str, ...] = ()
    _store: Any = PrivateAttr(default=None)
    _mlflow: Any = PrivateAttr(default=None)

    @classmethod
    def open(cls, cfg: Config, state: str | Path | None = None, *, tracking: bool = True,
             tracking_uri: str | None = None, s3: bool = True, progress: bool = False) -> RunContext:
        """With `tracking`, the tracking server (`tracking_uri`, $MLFLOW_TRACKING_URI, or the embedded
        one, started); with `s3`, the embedded SeaweedFS unless an S3 endpoint is named. Nothing
        below starts a server."""
        from simsiam.services import state_dir
        from simsiam.services.endpoints import object_store, tracking_server

        uri = tracking_server(state, tracking_uri) if tracking else None
        if s3:
            object_store(state, cfg.storage.endpoint_url)
        return cls(cfg=cfg, state=state_dir(state), tracking_uri=uri, progress=progress)

    @property
    def store(self):
        """The bucket of `cfg.storage` (an `ObjectStore`), opened once."""
        if self._store is None:
            from simsiam.storage import store_for

            self._store = store_for(self.cfg, self.state)
        return self._store

    def bucket(self, name: str):
        """Another bucket on the store's endpoint, with its credentials (a user's images); never created."""
        from dataclasses import replace

        from simsiam.storage import ObjectStore

        return self.store if name == self.store.bucket else ObjectStore(replace(self.store.settings, bucket=name))

    @property
    def mlflow(self):
        """An MLflow client of `tracking_uri`."""
        if self._mlflow is None:
            from mlflow import MlflowClient

            self._mlflow = MlflowClient(self.tracking_uri)
        return self._mlflow

    def with_config(self, cfg: Config) -> RunContext:
        """The same services with another config (the pipeline pins the staged versions in it); the
        store is kept while the storage settings are the same."""
        ctx = self.model_copy(update={"cfg": cfg})
        if cfg.storage != self.cfg.storage:
            ctx._store = None
        return ctx

    def with_handles(self, store=None, mlflow=None) -> RunContext:
        """The same context over other handles (a wrapped store or client, say)."""
        ctx = self.model_copy()
        ctx._store, ctx._mlflow = store or self._store, mlflow or self._mlflow
        return ctx

    def in_flow_run(self, *ids: str | None) -> RunContext:
        return self.model_copy(update={"flow_runs": tuple(dict.fromkeys(i for i in (*self.flow_runs, *ids) if i))})
