"""The embed step: a registered model version's features of a staged dataset version, written to
object storage as versioned Parquet (model version x data version). Done once: a complete
version is returned as is."""

from __future__ import annotations

from functools import partial

from tqdm import tqdm

from simsiam.config import validate_config
from simsiam.results import Embeddings
from simsiam.steps.context import RunContext


def embed(ctx: RunContext, model_uri: str, data: str) -> Embeddings:
    """`model_uri`: `models:/<name>@<alias>` or `models:/<name>/<version>`; `data`: `<name>@<version>`
    or `<name>@latest` in the bucket of the context's store."""
    import numpy as np

    from simsiam.evaluation import features_for
    from simsiam.runtime import resolve_device
    from simsiam.storage import StagedSource, resolve_dataset
    from simsiam.storage.embeddings import embeddings_prefix, existing_embeddings, write_embeddings
    from simsiam.tracking import load_registered_net, registered_version

    name, version = registered_version(model_uri, ctx.tracking_uri)
    store = ctx.store
    ref, _ = resolve_dataset(store, data)
    prefix = embeddings_prefix(name, version, ref)
    if (done := existing_embeddings(store, prefix)) is not None:
        return _result(done, True)
    net, info = load_registered_net(f"models:/{name}/{version}", ctx.tracking_uri)  # resolved: not a moved alias
    model_cfg = validate_config(info["config"])
    device = resolve_device(ctx.cfg.train.device)
    source = StagedSource(store, f"{ref.name}@{ref.version}")
    bar = partial(tqdm, desc=f"embed {ref.name}", unit="batch", disable=None) if ctx.progress else None
    feats, labels = features_for(net.to(device), model_cfg, source, None, device, bar)
    meta = {"model_uri": f"models:/{name}/{version}", "model_name": name, "model_version": version,
            "part": info["part"], "data": {"name": ref.name, "version": ref.version, "uri": ref.uri}}
    manifest = write_embeddings(store, prefix, labels.numpy().astype(np.int64), feats.float().numpy(), meta,
                                source.origins())
    return _result(manifest, False)


def _result(manifest: dict, reused: bool) -> Embeddings:
    return Embeddings(uri=manifest["uri"], model_uri=manifest["model_uri"], data=manifest["data"],
                      num_rows=manifest["num_rows"], dim=manifest["dim"], part=manifest["part"], reused=reused)
