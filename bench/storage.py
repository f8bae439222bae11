"""Object-storage benchmark against a real SeaweedFS it starts in a temp state dir; prints JSON.

    python bench/storage.py --split train --shard-size 10000

Reports staging throughput (MB/s of shard bytes, including PNG encoding and read-back
verification), and reader images/s with a cold cache (download + verify + decode), a warm
cache (verify + decode) and, for reference, parsing the local IDX files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simsiam.data import load_fashion_mnist  # noqa: E402
from simsiam.services import start_s3, stop_s3  # noqa: E402
from simsiam.storage import S3Settings, StagedSource, open_store, stage_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--shard-size", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        svc = start_s3(Path(tmp) / "state")
        start_s = time.perf_counter() - t0
        try:
            store = open_store(S3Settings(endpoint_url=svc.endpoint_url, access_key=svc.access_key,
                                          secret_key=svc.secret_key))
            t0 = time.perf_counter()
            local = load_fashion_mnist(args.split, download=False)
            idx_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref, manifest = stage_dataset(local, store, f"bench-{args.split}", args.split, args.shard_size,
                                          progress=False)
            stage_s = time.perf_counter() - t0
            puts = store.puts
            t0 = time.perf_counter()
            stage_dataset(local, store, f"bench-{args.split}", args.split, args.shard_size, progress=False)
            restage_s = time.perf_counter() - t0
            cache = Path(tmp) / "cache"
            t0 = time.perf_counter()
            StagedSource(store, ref.uri, cache=cache)
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            StagedSource(store, ref.uri, cache=cache)
            warm_s = time.perf_counter() - t0
        finally:
            stop_s3(Path(tmp) / "state")
    n, mb = manifest["num_samples"], manifest["total_bytes"] / 2**20
    print(json.dumps({
        "samples": n, "shards": len(manifest["shards"]), "staged_mib": round(mb, 2), "s3_start_s": round(start_s, 2),
        "stage_s": round(stage_s, 2), "stage_mib_per_s": round(mb / stage_s, 2), "stage_img_per_s": round(n / stage_s),
        "stage_puts": puts, "restage_noop_s": round(restage_s, 2),
        "read_cold_img_per_s": round(n / cold_s), "read_warm_img_per_s": round(n / warm_s),
        "read_local_idx_img_per_s": round(n / idx_s),
    }, indent=2))


if __name__ == "__main__":
    main()
