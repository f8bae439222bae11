"""Stage a collection of unlabelled images (a folder, or an S3 prefix in any bucket) as a version
that later versions build on: shards are content-addressed, so a nightly re-staging of a growing
prefix uploads only the shards of what is new.

Layout under `s3://<bucket>/datasets/<name>/`:
- `shards/<sha256>.parquet`: one row per image (`index`, `label` null, `image`, `origin`), shared by
  every version whose images it holds, and beside it `shards/<sha256>.files.parquet`: the `origin`
  and change `token` of each, so the next staging knows what a shard holds without reading it;
- `<version>/skipped.parquet`: the files that are not readable images, with why;
- `<version>/manifest.json`: the shards in order (with each one's `offset` in the version), written
  LAST: a version without a manifest does not exist.

The version is a hash of the listing (each origin and its change token: size and mtime, or the
ETag) and the policy: an unchanged collection is a cache hit that reads and uploads nothing. A new
version keeps every earlier shard whose files are all still there unchanged, and packs the rest
(new files, changed ones, survivors of shards that lost a file) into new shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from itertools import islice
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from simsiam.errors import DataError
from simsiam.images import Item, Prepared, prepare, walk_folder
from simsiam.storage.client import ObjectStore
from simsiam.storage.reader import versions
from simsiam.storage.shards import put_verified, sha256
from simsiam.storage.staging import MANIFEST, DatasetRef, check_dataset_name

FORMAT = "parquet-images/1"
SKIPPED = "skipped.parquet"
FILES = ".files.parquet"  # a shard's sidecar: the origin and token of each of its images
SHOWN_SKIPS = 10
READERS, WINDOW = 8, 256  # files read at once; files read ahead of the shard being packed


@dataclass
class Staging:
    """What one staging did, beside the version it made."""

    uploaded_objects: int = 0
    uploaded_bytes: int = 0
    reused_shards: int = 0


def s3_items(store: ObjectStore, prefix: str) -> Iterator[Item]:
    """The objects under `prefix`, listed page by page; folder markers and hidden names left out."""
    for obj in store.list_keys(prefix):
        key = obj["Key"]
        if key.endswith("/") or key.rsplit("/", 1)[-1].startswith("."):
            continue
        yield Item(key, f"{obj['Size']}-{obj.get('ETag', '').strip(chr(34))}", partial(store.get_bytes, key))


def collection_items(root: str, bucket: Callable[[str], ObjectStore]) -> Iterator[Item]:
    """The files of a folder (`simsiam.images.walk_folder`) or the objects of an S3 prefix, whose
    bucket `bucket(name)` opens with the store's endpoint and credentials."""
    if root.startswith("s3://"):
        name, prefix = parse_s3_uri(root)
        return s3_items(bucket(name), prefix)
    return walk_folder(root)


def collection_name(root: str) -> str:
    """A staged name for a folder or prefix: its last part, lower-cased (`./My Photos/` -> `my-photos`);
    a prefix's bucket comes first (`s3://team/photos/2026/` -> `team-2026`), as its last part alone
    is often a date or `train`."""
    parts = root.removeprefix("s3://").rstrip("/").split("/")
    last = f"{parts[0]}-{parts[-1]}" if root.startswith("s3://") and len(parts) > 1 else parts[-1]
    return re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-._") or "images"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix/` -> (bucket, prefix)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise DataError(f"{uri!r} is not an S3 prefix: expected s3://<bucket>/<prefix>/")
    return bucket, prefix


def stage_collection(items: Iterable[Item], store: ObjectStore, name: str, source_desc: str, shard_size: int,
                     max_side: int, limit: int | None = None,
                     progress: bool = True) -> tuple[DatasetRef, dict, Staging]:
    """Stage the listed files as a version of `name` (module docstring); returns (ref, manifest, what
    it did). A listing with no usable image is a DataError."""
    check_dataset_name(name)
    listing = sorted(islice(items, limit), key=lambda i: i.origin)
    if not listing:
        raise DataError(f"{source_desc}: no files to stage")
    h = hashlib.sha256(f"{FORMAT}|shard_size={shard_size}|max_side={max_side}|".encode())
    for item in listing:
        h.update(f"{item.origin}\0{item.token}\n".encode())
    ref, done = DatasetRef(store.bucket, name, h.hexdigest()[:16]), Staging()
    if store.head(ref.prefix + MANIFEST) is not None:
        return ref, json.loads(store.get_bytes(ref.prefix + MANIFEST)), done
    reused, known, todo = _plan(listing, _previous(store, name))
    new, skipped = _pack(todo, store, name, shard_size, max_side, progress, done)
    shards, skipped = _with_offsets(reused + new), known + skipped
    if not shards:
        raise DataError(f"{source_desc}: no usable image among {len(listing)} files "
                        f"(e.g. {', '.join(r['origin'] for r in skipped[:3])}: not readable as images)")
    if skipped:
        _put(store, ref.prefix + SKIPPED, _parquet(skipped, ("origin", "token", "skipped")), done)
    manifest = _manifest(ref, source_desc, shard_size, max_side, shards, skipped, len(listing))
    _put(store, ref.prefix + MANIFEST, json.dumps(manifest, indent=2).encode(), done)
    done.reused_shards = len(reused)
    return ref, manifest, done


def _previous(store: ObjectStore, name: str) -> tuple[list[dict], dict[str, list[dict]], list[dict]]:
    """The newest complete version of `name` staged this way: (its shards, each shard's files by
    sha256, its skipped files); all empty when there is none."""
    for ref, manifest in versions(store, name):
        if manifest.get("format") == FORMAT:
            files = {s["sha256"]: _read_parquet(store, s["key"].removesuffix(".parquet") + FILES)
                     for s in manifest["shards"]}
            skipped = _read_parquet(store, ref.prefix + SKIPPED) if manifest["skipped"]["count"] else []
            return manifest["shards"], files, skipped
    return [], {}, []


def _read_parquet(store: ObjectStore, key: str) -> list[dict]:
    return pq.read_table(io.BytesIO(store.get_bytes(key))).to_pylist()


def _plan(listing: list[Item], previous: tuple[list[dict], dict[str, list[dict]], list[dict]]):
    """(earlier shards kept whole, files still known to be unreadable, files to pack): a shard is kept
    when every file in it is still listed with the same token."""
    shards, files, skipped = previous
    now = {i.origin: i.token for i in listing}
    reused = [dict(s) for s in shards if all(now.get(f["origin"]) == f["token"] for f in files[s["sha256"]])]
    known = [r for r in skipped if now.get(r["origin"]) == r["token"]]
    kept = {f["origin"] for s in reused for f in files[s["sha256"]]} | {r["origin"] for r in known}
    return reused, known, [i for i in listing if i.origin not in kept]


def _pack(todo: list[Item], store: ObjectStore, name: str, shard_size: int, max_side: int, progress: bool,
          done: Staging) -> tuple[list[dict], list[dict]]:
    """New shards of the files in `todo`, and the files skipped as unreadable (with why)."""
    shards, skipped, batch = [], [], []
    bar = tqdm(total=len(todo), desc=f"stage {name}", unit="img", disable=None if progress else True)
    for item, out in _prepared(todo, max_side):
        if isinstance(out, DataError):
            skipped.append({"origin": item.origin, "token": item.token, "skipped": str(out)})
        else:
            batch.append((item, out))
        bar.update(1)
        if len(batch) == shard_size:
            shards.append(_write_shard(batch, store, name, done))
            batch = []
    if batch:
        shards.append(_write_shard(batch, store, name, done))
    bar.close()
    return shards, skipped


def _prepared(todo: list[Item], max_side: int) -> Iterator[tuple[Item, Prepared | DataError]]:
    """Each file read and prepared, in order, READERS at a time (S3 reads wait on the network and
    decoding releases the GIL), never more than WINDOW ahead: memory stays bounded."""
    with ThreadPoolExecutor(READERS) as pool:
        for start in range(0, len(todo), WINDOW):
            chunk = todo[start:start + WINDOW]
            yield from zip(chunk, pool.map(partial(_prepare_or_error, max_side=max_side), chunk))


def _prepare_or_error(item: Item, max_side: int) -> Prepared | DataError:
    try:
        return prepare(item.read(), item.origin, max_side)
    except DataError as exc:
        return exc


def _write_shard(batch: list[tuple[Item, Prepared]], store: ObjectStore, name: str, done: Staging) -> dict:
    table = pa.table({"index": pa.array(range(len(batch)), pa.int64()), "label": pa.nulls(len(batch), pa.int64()),
                      "image": pa.array([p.data for _, p in batch], pa.binary()),
                      "origin": pa.array([i.origin for i, _ in batch], pa.string())})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none")  # the images are compressed already
    data = buf.getvalue()
    digest = sha256(data)
    key = f"datasets/{name}/shards/{digest}.parquet"
    head = store.head(key)
    if head is None or head["size"] != len(data):  # else: stored by an earlier, interrupted staging
        _put(store, key, data, done, digest)
    files = key.removesuffix(".parquet") + FILES
    if store.head(files) is None:
        _put(store, files, _parquet([{"origin": i.origin, "token": i.token} for i, _ in batch], ("origin", "token")),
             done)
    shapes = {(p.channels, p.height, p.width) for _, p in batch}
    return {"key": key, "size": len(data), "sha256": digest, "count": len(batch),
            "channels": max(p.channels for _, p in batch), "shape": list(shapes.pop()) if len(shapes) == 1 else None}


def _put(store: ObjectStore, key: str, data: bytes, done: Staging, digest: str | None = None) -> None:
    if digest:
        put_verified(store, key, data, digest, "shard", "staging")
    else:
        store.put_bytes(key, data, content_type="application/json" if key.endswith(".json") else
                        "application/octet-stream")
    done.uploaded_objects += 1
    done.uploaded_bytes += len(data)


def _with_offsets(shards: list[dict]) -> list[dict]:
    offset = 0
    for s in shards:
        s["offset"], offset = offset, offset + s["count"]
    return shards


def _parquet(rows: list[dict], columns: tuple[str, ...]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in columns])), buf)
    return buf.getvalue()


def _manifest(ref: DatasetRef, source_desc: str, shard_size: int, max_side: int, shards: list[dict],
              skipped: list[dict], files: int) -> dict:
    shapes = {tuple(s["shape"]) if s["shape"] else None for s in shards}
    return {"format": FORMAT, "name": ref.name, "version": ref.version, "dataset": "images", "split": "train",
            "classes": [], "labels": False, "num_samples": sum(s["count"] for s in shards),
            "channels": max(s["channels"] for s in shards),
            "image_shape": list(shapes.pop()) if len(shapes) == 1 and None not in shapes else None,
            "source": source_desc, "files": files,
            "skipped": {"count": len(skipped), "first": [f"{r['skipped']}" for r in skipped[:SHOWN_SKIPS]]},
            "policy": {"max_side": max_side, "grey": "PNG", "rgb": "JPEG q90, or the file as is"},
            # microseconds: the next staging builds on the newest version, even one made the same second
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "shard_size": shard_size,
            "total_bytes": sum(s["size"] for s in shards), "shards": shards}
