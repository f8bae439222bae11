"""The embed step: a registered model version's features of a staged dataset version, written to
object storage as versioned Parquet (model version x data version). Done once: a complete
version is returned as is."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from simsiam.config import Config, validate_config


def embed(cfg: Config, model_uri: str, data: str, tracking_uri: str, state: str | Path | None = None,
          progress: bool = True) -> dict[str, Any]:
    """`model_uri`: `models:/<name>@<alias>` or `models:/<name>/<version>`; `data`: `<name>@<version>`
    or `<name>@latest` in `cfg.storage`'s bucket. Returns the manifest (its `uri`, rows, dim)."""
    import numpy as np

    from simsiam.evaluation import features_for
    from simsiam.runtime import resolve_device
    from simsiam.storage import StagedSource, resolve_dataset, store_for
    from simsiam.storage.embeddings import embeddings_prefix, existing_embeddings, write_embeddings
    from simsiam.tracking import check_server, load_registered_net, registered_version

    check_server(tracking_uri)
    name, version = registered_version(model_uri, tracking_uri)
    store = store_for(cfg, state)
    ref, _ = resolve_dataset(store, data)
    prefix = embeddings_prefix(name, version, ref)
    if (done := existing_embeddings(store, prefix)) is not None:
        return {**done, "reused": True}
    net, info = load_registered_net(f"models:/{name}/{version}", tracking_uri)  # resolved above: not a moved alias
    model_cfg = validate_config(info["config"])
    device = resolve_device(cfg.train.device)
    source = StagedSource(store, f"{ref.name}@{ref.version}")
    bar = partial(tqdm, desc=f"embed {ref.name}", unit="batch") if progress else None
    feats, labels = features_for(net.to(device), model_cfg, source, None, device, bar)
    meta = {"model_uri": f"models:/{name}/{version}", "model_name": name, "model_version": version,
            "part": info["part"], "data": {"name": ref.name, "version": ref.version, "uri": ref.uri}}
    manifest = write_embeddings(store, prefix, labels.numpy().astype(np.int64), feats.float().numpy(), meta)
    return {**manifest, "reused": False}
