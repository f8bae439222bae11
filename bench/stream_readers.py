"""Why streaming uses our reader and not Ray Data: read every row of one staged version (Fashion-MNIST
train, 60k images in 12 shards, from the embedded SeaweedFS) with our ShardStream or with Ray
Data's read_parquet + iter_batches (Ray started beforehand, not timed); prints JSON (rows/s, the
process's peak RSS while reading).

    python bench/stream_readers.py ours
    python bench/stream_readers.py raydata
"""
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
from simsiam.data import load_fashion_mnist  # noqa: E402
from simsiam.services import start_s3, stop_s3  # noqa: E402
from simsiam.storage import S3Settings, open_store, stage_dataset  # noqa: E402
from simsiam.storage.reader import shard_stream  # noqa: E402


def peak_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def read_all(which: str, settings: S3Settings, store, ref, manifest) -> int:
    if which == "ours":
        stream = shard_stream(store, ref, manifest)
        return sum(len(stream.rows(shard)) for shard in stream.shards)
    import pyarrow.fs as pafs
    import ray

    scheme, host = settings.endpoint_url.split("://")
    fs = pafs.S3FileSystem(endpoint_override=host, scheme=scheme, access_key=settings.access_key,
                           secret_key=settings.secret_key, region="us-east-1")
    ds = ray.data.read_parquet([f"{store.bucket}/{s['key']}" for s in manifest["shards"]], filesystem=fs)
    return sum(b.num_rows for b in ds.iter_batches(batch_size=256, batch_format="pyarrow"))


def main(which: str) -> None:
    with tempfile.TemporaryDirectory() as state:
        svc = start_s3(state)
        try:
            settings = S3Settings(endpoint_url=svc.endpoint_url, access_key=svc.access_key, secret_key=svc.secret_key)
            store = open_store(settings)
            ref, m = stage_dataset(load_fashion_mnist("train", download=False), store, "fm-train", shard_size=5000,
                                   progress=False)
            if which == "raydata":  # Ray's own start-up is not counted
                import ray

                ray.init(num_cpus=2, include_dashboard=False)
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS of the reading only
            t0 = time.perf_counter()
            rows = read_all(which, settings, store, ref, m)
            wall = time.perf_counter() - t0
        finally:
            stop_s3(state)
    print(json.dumps({"reader": which, "rows": rows, "shards": len(m["shards"]), "bytes": m["total_bytes"],
                      "wall_s": round(wall, 2), "rows_per_s": round(rows / wall), "peak_rss_mb": round(peak_mb())}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ours")
