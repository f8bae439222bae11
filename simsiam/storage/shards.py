"""Shard format: Parquet, one row per sample: `index` (int64, position in the source), `label`
(int64), `image` (binary: PNG for in-memory sources, the original file bytes for image folders).

Why Parquet: Ray Data reads it natively (`ray.data.read_parquet`) and plain torch reads it with
pyarrow, column-wise and without a tar index; it is written deterministically (no timestamps),
so the same samples always give the same bytes and the same sha256.
"""

from __future__ import annotations

import hashlib
import io
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from simsiam.errors import DataError, StorageError

FORMAT = "parquet-png/1"


def encode_png(img: torch.Tensor) -> bytes:
    arr = img.numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes, channels: int) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im)
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def sample_bytes(source, index: int) -> bytes:
    """The stored bytes of one sample: original file bytes when the source has files, else PNG."""
    paths = getattr(source, "paths", None)
    if paths is not None:
        with open(paths[index], "rb") as fh:
            return fh.read()
    return encode_png(source.image(index))


def write_shard(source, indices: Sequence[int]) -> bytes:
    idx = [int(i) for i in indices]
    table = pa.table({
        "index": pa.array(idx, pa.int64()),
        "label": pa.array([int(source.labels[i]) for i in idx], pa.int64()),
        "image": pa.array([sample_bytes(source, i) for i in idx], pa.binary()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none")  # PNG/JPEG bytes are already compressed
    return buf.getvalue()


def read_shard(data: bytes, name: str) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"shard {name} is not a readable Parquet file: {exc}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_verified(store, key: str, data: bytes, digest: str, what: str, work: str,
                 content_type: str = "application/octet-stream") -> None:
    """Upload `data` with its sha256 and read it back: bytes changed on the way stop `work` rather
    than leave a version whose manifest vouches for them."""
    store.put_bytes(key, data, metadata={"sha256": digest}, content_type=content_type)
    if sha256(store.get_bytes(key)) != digest:
        raise StorageError(f"{what} s3://{store.bucket}/{key} read back with different bytes; {work} stopped")


def source_fingerprint(source, shard_size: int) -> str:
    """Content hash of the samples (pixels or file bytes, labels, order) plus the shard layout:
    the dataset version. Same source -> same version -> re-staging uploads nothing."""
    h = hashlib.sha256(f"{FORMAT}|shard_size={shard_size}|n={len(source)}|".encode())
    h.update(np.asarray(source.labels, dtype=np.int64).tobytes())
    images = getattr(source, "images", None)
    if isinstance(images, torch.Tensor):
        h.update(str(tuple(images.shape)).encode())
        h.update(images.contiguous().numpy().tobytes())
    else:
        for i in range(len(source)):
            h.update(sample_bytes(source, i))
    return h.hexdigest()[:16]
