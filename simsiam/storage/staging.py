"""Stage a dataset to `s3://<bucket>/datasets/<name>/<version>/`: shards first, each verified by
reading it back, then `manifest.json` LAST. A version without a manifest does not exist for
readers, so an interrupted staging leaves nothing half-visible; re-running resumes, skipping
shards already stored with the right size and sha256."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from simsiam.errors import StorageError
from simsiam.storage.client import ObjectStore
from simsiam.storage.shards import FORMAT, put_verified, sha256, source_fingerprint, write_shard

MANIFEST = "manifest.json"
# One path segment under datasets/: a slash would hide the version from `data ls`, '..' would escape it.
DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def check_dataset_name(name: str) -> str:
    if not DATASET_NAME.fullmatch(name):
        raise StorageError(f"dataset name {name!r} is not allowed: use lower-case letters, digits, '.', '_' "
                           "and '-', starting with a letter or digit (at most 128 characters)")
    return name


def stage_name(cfg, split: str = "train", name: str | None = None) -> str:
    """The name a staging of `cfg.data`'s `split` goes under, checked: `<dataset>-<split>`, or an image
    collection's folder or prefix name."""
    if cfg.data.dataset == "images":
        from simsiam.storage.unlabelled import collection_name

        return check_dataset_name(name or collection_name(cfg.data.root or ""))
    return check_dataset_name(name or f"{cfg.data.dataset}-{split}")


@dataclass(frozen=True)
class DatasetRef:
    bucket: str
    name: str
    version: str

    @property
    def prefix(self) -> str:
        return f"datasets/{self.name}/{self.version}/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.rstrip('/')}"

    @property
    def manifest_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}{MANIFEST}"


def stage_dataset(source, store: ObjectStore, name: str, split: str = "train", shard_size: int = 10_000,
                  source_desc: str = "", progress: bool = True) -> tuple[DatasetRef, dict]:
    """Upload `source` (an ImageSource) as a versioned dataset; returns (ref, manifest). `progress`:
    a bar on a terminal (none in a log)."""
    if shard_size < 1:
        raise StorageError(f"shard_size must be >= 1, got {shard_size}")
    check_dataset_name(name)
    version = source_fingerprint(source, shard_size)
    ref = DatasetRef(store.bucket, name, version)
    manifest_key = ref.prefix + MANIFEST
    if store.head(manifest_key) is not None:
        return ref, json.loads(store.get_bytes(manifest_key))

    n = len(source)
    starts = list(range(0, n, shard_size))
    shards = []
    bar = tqdm(total=n, desc=f"stage {name}", unit="img", disable=None if progress else True)
    for i, start in enumerate(starts):
        idx = range(start, min(n, start + shard_size))
        key = f"{ref.prefix}shard-{i:05d}.parquet"
        data = write_shard(source, idx)
        digest = sha256(data)
        existing = store.head(key)
        if not (existing and existing["size"] == len(data) and existing["metadata"].get("sha256") == digest):
            put_verified(store, key, data, digest, "shard", "staging")
        shards.append({"key": key, "size": len(data), "sha256": digest, "count": len(idx)})
        bar.update(len(idx))
    bar.close()

    first = source.image(0)
    fixed_shape = getattr(source, "images", None) is not None
    manifest = {
        "format": FORMAT, "name": name, "version": version, "dataset": source.name, "split": split,
        "classes": list(source.classes), "num_samples": n, "channels": int(first.shape[0]),
        "image_shape": list(first.shape) if fixed_shape else None, "source": source_desc,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shard_size": shard_size,
        "total_bytes": sum(s["size"] for s in shards), "shards": shards,
    }
    store.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode(), content_type="application/json")
    return ref, manifest
