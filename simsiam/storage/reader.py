"""Read a staged dataset version: shards are downloaded once into a local cache keyed by their
sha256, verified, and decoded into an ImageSource that the core's transforms and engine use.

Every reader (each data-parallel rank too) holds the whole version: ranks take disjoint samples
of one seeded permutation (`simsiam.data.EpochSampler`), which keeps the sample order, and so a
resume, independent of the worker count."""

from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch

from simsiam.data import NO_LABEL, ImageSource, cache_dir
from simsiam.errors import DataError
from simsiam.storage.client import ObjectStore
from simsiam.storage.shards import decode_image, read_shard, sha256
from simsiam.storage.staging import MANIFEST, DatasetRef
from simsiam.streaming import Shard, ShardStream


def _manifest(store: ObjectStore, ref: DatasetRef) -> dict | None:
    if store.head(ref.prefix + MANIFEST) is None:
        return None
    try:
        return json.loads(store.get_bytes(ref.prefix + MANIFEST))
    except json.JSONDecodeError:
        raise DataError(f"manifest {ref.manifest_uri} is not valid JSON") from None


def versions(store: ObjectStore, name: str) -> list[tuple[DatasetRef, dict]]:
    """The complete (manifest-bearing) versions of `name` with their manifests, newest first."""
    prefix, found = f"datasets/{name}/", []
    for vprefix in store.list_prefixes(prefix):
        ref = DatasetRef(store.bucket, name, vprefix[len(prefix):].rstrip("/"))
        m = _manifest(store, ref)
        if m is not None:
            found.append((ref, m))
    return sorted(found, key=lambda rm: rm[1]["created_at"], reverse=True)


def list_datasets(store: ObjectStore) -> list[dict]:
    """Every complete version in the bucket, newest first per name."""
    rows = [{"name": ref.name, "version": ref.version, "uri": ref.uri, "split": m["split"],
             "samples": m["num_samples"], "shards": len(m["shards"]), "bytes": m["total_bytes"],
             "created_at": m["created_at"], "dataset": m["dataset"]}
            for name_prefix in store.list_prefixes("datasets/")
            for ref, m in versions(store, name_prefix[len("datasets/"):].rstrip("/"))]
    rows.sort(key=lambda r: (r["name"], r["created_at"]), reverse=True)
    return rows


def resolve_dataset(store: ObjectStore, spec: str) -> tuple[DatasetRef, dict]:
    """`s3://bucket/datasets/<name>/<version>`, `<name>@<version>`, `<name>@latest` or `<name>`."""
    if spec.startswith("s3://"):
        parts = spec[len("s3://"):].strip("/").split("/")
        if len(parts) != 4 or parts[1] != "datasets":
            raise DataError(f"dataset URI {spec!r} must look like s3://<bucket>/datasets/<name>/<version>")
        if parts[0] != store.bucket:
            raise DataError(f"dataset URI {spec!r} is in bucket {parts[0]!r}, the store uses {store.bucket!r}")
        name, version = parts[2], parts[3]
    else:
        name, _, version = spec.partition("@")
        version = version or "latest"
    if version == "latest":
        versions = [r for r in list_datasets(store) if r["name"] == name]
        if not versions:
            raise DataError(f"no staged dataset named {name!r} in s3://{store.bucket}/datasets/ "
                            f"(stage one with `simsiam stage`)")
        version = versions[0]["version"]
    ref = DatasetRef(store.bucket, name, version)
    manifest = _manifest(store, ref)
    if manifest is None:
        raise DataError(f"dataset {ref.uri} has no manifest: it does not exist or its staging did not finish")
    return ref, manifest


def download_shard(store: ObjectStore, shard: dict) -> bytes:
    """Bytes of one shard from the store, checked against its manifest entry."""
    data = store.get_bytes(shard["key"])
    if sha256(data) != shard["sha256"] or len(data) != shard["size"]:
        raise DataError(f"shard s3://{store.bucket}/{shard['key']} does not match its manifest "
                        f"(sha256 {sha256(data)[:12]}..., expected {shard['sha256'][:12]}...)")
    return data


def fetch_shard(store: ObjectStore, shard: dict, cache: Path) -> bytes:
    """Bytes of one shard, from the cache when a file with the right sha256 is there."""
    path = cache / f"{shard['sha256']}.parquet"
    if path.exists():
        data = path.read_bytes()
        if sha256(data) == shard["sha256"]:
            return data
        path.unlink()  # a corrupt cache entry is re-downloaded
    data = download_shard(store, shard)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


class StagedSource(ImageSource):
    """A staged version as an ImageSource (`src[i] -> (uint8 CxHxW, label)`). Fixed-size images are
    decoded once into one tensor (`images`), cached as .npy beside the shard cache under the
    version's name, so later runs skip download and decoding; variable-size ones decode on access."""

    def __init__(self, store: ObjectStore, spec: str, cache: str | Path | None = None) -> None:
        self.ref, self.manifest = resolve_dataset(store, spec)
        self.name = self.manifest["dataset"]
        self.classes = list(self.manifest["classes"])
        self.cache = Path(cache) if cache else cache_dir() / "shards"
        self.channels = self.manifest["channels"]
        self._blobs, self._store = None, store
        decoded = self._load_decoded()
        if decoded is not None:
            self.images, self.labels = decoded
            return
        blobs, labels = [], []
        for shard in self.manifest["shards"]:
            table = read_shard(fetch_shard(store, shard, self.cache), shard["key"])
            blobs += table.column("image").to_pylist()
            labels += table.column("label").to_pylist()
        self.labels = torch.tensor([NO_LABEL if y is None else y for y in labels], dtype=torch.long)
        if self.manifest.get("image_shape"):
            self.images = torch.stack([decode_image(b, self.channels) for b in blobs])
            self._save_decoded()
        else:
            self._blobs = blobs

    def _decoded_paths(self) -> tuple[Path, Path]:
        base = self.cache / "decoded" / f"{self.ref.name}-{self.ref.version}"
        return base.with_name(base.name + ".images.npy"), base.with_name(base.name + ".labels.npy")

    def _load_decoded(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        shape = self.manifest.get("image_shape")
        images_path, labels_path = self._decoded_paths()
        if not shape or not (images_path.exists() and labels_path.exists()):
            return None
        try:
            images, labels = np.load(images_path), np.load(labels_path)
        except (OSError, ValueError):
            return None  # a torn or foreign file: decode again
        n = self.manifest["num_samples"]
        if images.dtype != np.uint8 or images.shape[0] != n or labels.shape != (n,):
            return None
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def _save_decoded(self) -> None:
        for path, array in zip(self._decoded_paths(), (self.images.numpy(), self.labels.numpy())):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
            np.save(tmp, array)
            os.replace(tmp, path)  # complete or absent

    def image(self, index: int) -> torch.Tensor:
        if self._blobs is None:
            return self.images[index]
        return decode_image(self._blobs[index], self.channels)

    def origins(self) -> list[str] | None:
        """Each image's file or object key, in order, for a staged collection (None for a dataset
        staged with labels): what joins features back to the user's files."""
        if self.manifest.get("labels", True):
            return None
        return [o for shard in self.manifest["shards"]
                for o in read_shard(fetch_shard(self._store, shard, self.cache), shard["key"]).column("origin")
                .to_pylist()]


def shard_stream(store: ObjectStore, ref: DatasetRef, manifest: dict) -> ShardStream:
    """A staged version read shard by shard straight from the store (no disk cache: a node needs no
    room for the version, and a shard is only as big in memory as it is in S3)."""
    entries = {s["key"]: s for s in manifest["shards"]}

    def fetch(shard: Shard) -> list[tuple[int, int, bytes]]:
        entry = entries[shard.key]
        table = read_shard(download_shard(store, entry), shard.key)
        # a collection's shard is shared by versions: its samples' places come from the manifest
        index = [entry["offset"] + i for i in range(table.num_rows)] if "offset" in entry else \
            table.column("index").to_pylist()
        labels = [NO_LABEL if y is None else y for y in table.column("label").to_pylist()]
        return list(zip(index, labels, table.column("image").to_pylist()))

    return ShardStream(manifest["dataset"], list(manifest["classes"]), manifest["channels"],
                       [Shard(s["key"], s["count"], s["size"]) for s in manifest["shards"]], fetch,
                       partial(decode_image, channels=manifest["channels"]), ref=ref)


def decoded_bytes(manifest: dict) -> int:
    """Memory the version takes held whole: decoded pixels when its images share one size, else its bytes."""
    shape = manifest.get("image_shape")
    return manifest["num_samples"] * math.prod(shape) if shape else manifest["total_bytes"]
