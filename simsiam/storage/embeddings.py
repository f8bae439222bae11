"""Embeddings as versioned data: the features of a staged dataset version under one registered
model version, in `s3://<bucket>/embeddings/<model>/v<version>/<dataset>/<data version>/` as
Parquet parts (`index`, `label`, `embedding`) and a `manifest.json` written last, as in staging:
a version without its manifest is incomplete and never listed."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simsiam.storage.client import ObjectStore
from simsiam.storage.shards import put_verified, sha256
from simsiam.storage.staging import MANIFEST, DatasetRef, check_dataset_name

FORMAT = "parquet-embeddings/1"
ROWS_PER_PART = 50_000


def embeddings_prefix(model: str, version: str, data: DatasetRef) -> str:
    check_dataset_name(model)
    return f"embeddings/{model}/v{version}/{data.name}/{data.version}/"


def _part(index: np.ndarray, labels: np.ndarray, feats: np.ndarray, origins: list[str] | None = None) -> bytes:
    emb = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), pa.float32()), feats.shape[1])
    columns = {"index": pa.array(index, pa.int64()), "label": pa.array(labels, pa.int64()), "embedding": emb}
    if origins is not None:  # an image collection: each row's file or object key, to join back to the user's files
        columns["origin"] = pa.array(origins, pa.string())
    table = pa.table(columns)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def existing_embeddings(store: ObjectStore, prefix: str) -> dict | None:
    return json.loads(store.get_bytes(prefix + MANIFEST)) if store.head(prefix + MANIFEST) is not None else None


def write_embeddings(store: ObjectStore, prefix: str, labels: np.ndarray, feats: np.ndarray, meta: dict,
                     origins: list[str] | None = None) -> dict:
    """Parts, each read back and checked, then the manifest; returns the manifest."""
    parts = []
    for i, start in enumerate(range(0, len(feats), ROWS_PER_PART)):
        stop = min(len(feats), start + ROWS_PER_PART)
        key = f"{prefix}part-{i:05d}.parquet"
        data = _part(np.arange(start, stop), labels[start:stop], feats[start:stop],
                     origins[start:stop] if origins is not None else None)
        put_verified(store, key, data, sha256(data), "part", "embedding")
        parts.append({"key": key, "rows": stop - start, "size": len(data), "sha256": sha256(data)})
    manifest = {"format": FORMAT, **meta, "num_rows": int(len(feats)), "dim": int(feats.shape[1]), "parts": parts,
                "uri": f"s3://{store.bucket}/{prefix.rstrip('/')}",
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.put_bytes(prefix + MANIFEST, json.dumps(manifest, indent=2).encode(), content_type="application/json")
    return manifest


def read_embeddings(store: ObjectStore, manifest: dict) -> pa.Table:
    return pa.concat_tables([pq.read_table(io.BytesIO(store.get_bytes(p["key"]))) for p in manifest["parts"]])


def list_embeddings(store: ObjectStore) -> list[dict]:
    """Every complete embeddings version: model, model version, data name and version, rows, dim."""
    rows = []
    for model_p in store.list_prefixes("embeddings/"):
        for version_p in store.list_prefixes(model_p):
            for data_p in store.list_prefixes(version_p):
                for dv_p in store.list_prefixes(data_p):
                    m = existing_embeddings(store, dv_p)
                    if m is not None:
                        rows.append({"model": m["model_name"], "model_version": m["model_version"],
                                     "data": f"{m['data']['name']}@{m['data']['version']}", "rows": m["num_rows"],
                                     "dim": m["dim"], "uri": m["uri"], "created_at": m["created_at"]})
    return sorted(rows, key=lambda r: r["created_at"], reverse=True)
