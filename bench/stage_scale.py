"""Staging an S3 prefix of many small images: time and peak memory of `simsiam stage s3://...`, then of
the same prefix grown by 1% (what it uploads) and unchanged (a cache hit).
Prints JSON.

    python bench/stage_scale.py --objects 100000          # ~15 min on 2 cores, 100k 28x28 PNGs

The objects (Fashion-MNIST images as PNG, ~300 bytes each) are written to the embedded SeaweedFS of
a fresh state dir with plain boto3, not through our staging. Each staging runs as its own
`simsiam stage` process, measured with GNU time (wall, peak RSS).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _client(svc):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=svc.endpoint_url, aws_access_key_id=svc.access_key,
                        aws_secret_access_key=svc.secret_key, region_name="us-east-1",
                        config=Config(max_pool_connections=32, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def _upload(client, bucket: str, keys: list[str], images) -> float:
    from PIL import Image

    def put(i: int) -> None:
        buf = io.BytesIO()
        Image.fromarray(images[i % len(images), 0].numpy()).save(buf, format="PNG")
        client.put_object(Bucket=bucket, Key=keys[i], Body=buf.getvalue())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(len(keys))))
    return round(time.perf_counter() - t0, 1)


def _stage(state: Path, uri: str, *extra: str) -> dict:
    """One `simsiam stage` process: its JSON, wall time and peak RSS (MiB)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "simsiam.cli", "stage", uri, "--state", str(state),
           "--no-progress", "--name", "scale", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    if r.returncode != 0:
        return {"error": r.stderr[-600:], "wall_s": round(wall, 1)}
    out = json.loads(r.stdout)
    keep = ("samples", "shards", "bytes", "uploaded_objects", "uploaded_bytes", "reused_shards", "cached", "version")
    return {**{k: out[k] for k in keep}, "wall_s": round(wall, 1),
            "peak_rss_mib": round(int(rss[1]) / 1024, 1) if rss else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=10_000)
    args = ap.parse_args()
    from simsiam.data import load_fashion_mnist
    from simsiam.services import start_s3, stop_s3

    state = Path(tempfile.mkdtemp(prefix="simsiam-bench-scale-")) / "state"
    svc = start_s3(state)
    images = load_fashion_mnist("train", download=False).images
    os.environ["SIMSIAM_CACHE"] = str(state.parent / "cache")
    try:
        client = _client(svc)
        client.create_bucket(Bucket="scale")
        n, grown = args.objects, args.objects // 100
        per_folder = max(1, n // 100)  # 100 folders (of 1,000 at 100k objects)
        folders = -(-n // per_folder)
        keys = [f"img/{i // per_folder:03d}/{i:07d}.png" for i in range(n)]
        out = {"bench": "stage_scale", "objects": n, "shard_size": args.shard_size,
               "upload_s": _upload(client, "scale", keys, images)}
        shard = ["--set", f"storage.shard_size={args.shard_size}"]
        out["first"] = _stage(state, "s3://scale/img/", *shard)
        # 1% new objects, spread over the key order (new files in every folder, round robin)
        new = [f"img/{i % folders:03d}/{i:07d}b.png" for i in range(grown)]
        out["upload_new_s"] = _upload(client, "scale", new, images)
        out["grown_by_1_percent"] = _stage(state, "s3://scale/img/", *shard)
        g = out["grown_by_1_percent"]
        if "error" not in g:
            g["uploaded_share_of_bytes"] = round(g["uploaded_bytes"] / g["bytes"], 4)
        out["unchanged"] = _stage(state, "s3://scale/img/", *shard)
        print(json.dumps(out, indent=1))
    finally:
        stop_s3(state)


if __name__ == "__main__":
    main()
