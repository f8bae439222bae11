"""Proof on real pixels: Fashion-MNIST's 60,000 training images written as unlabelled PNG files, once
in a folder and once in an S3 prefix (uploaded with plain boto3, not through our staging), pretrained
with `simsiam run --data ... --eval fashion-mnist`, against the labelled pipeline `simsiam run` at the
same preset and seed. Labels play no part in training, so the three must agree. Prints JSON.

    python bench/own_images.py --preset cpu-demo --seed 0      # three demo runs: ~10-30 min on 2 cores

The image runs normalise with Fashion-MNIST's statistics (`data.normalize=fashion-mnist`) as the
labelled run does; a collection's default is ImageNet's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "simsiam.cli"]


def _write_files(folder: Path, n: int) -> None:
    from PIL import Image

    from simsiam.data import load_fashion_mnist

    images = load_fashion_mnist("train", download=False).images
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:05d}.png")


def _upload(folder: Path, state: Path, bucket: str, prefix: str) -> None:
    import boto3
    from botocore.config import Config

    from simsiam.services import start_s3

    svc = start_s3(state)  # running already: this reads where it is and its keys
    client = boto3.client("s3", endpoint_url=svc.endpoint_url, aws_access_key_id=svc.access_key,
                          aws_secret_access_key=svc.secret_key, region_name="us-east-1",
                          config=Config(max_pool_connections=32, request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required"))
    client.create_bucket(Bucket=bucket)
    files = sorted(folder.iterdir())
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda f: client.put_object(Bucket=bucket, Key=prefix + f.name, Body=f.read_bytes()), files))


def _run(state: Path, preset: str, seed: int, sets: list[str], *extra: str) -> dict:
    t0 = time.perf_counter()
    sets = [a for s in [f"train.seed={seed}", *sets] for a in ("--set", s)]
    r = subprocess.run([*CLI, "run", "--preset", preset, "--state", str(state), *sets, *extra],
                       capture_output=True, text=True, cwd=ROOT,
                       env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")})
    if r.returncode != 0:
        raise SystemExit(f"simsiam run {' '.join(extra)} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout[r.stdout.index("{\n"):])
    return {"wall_s": round(time.perf_counter() - t0, 1), "metrics": out["metrics"], "eval_set": out["eval_set"],
            "staged": out["staged"], "registered": out["registered"]["name"], "alias": out["registered"]["decision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=60_000)
    ap.add_argument("--set", action="append", default=[], help="config override for all three runs (quick checks)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="simsiam-bench-own-"))
    state, folder = tmp / "state", tmp / "fashion-mnist-files"
    os.environ["SIMSIAM_CACHE"] = str(tmp / "cache")
    t0 = time.perf_counter()
    _write_files(folder, args.images)
    out: dict = {"bench": "own_images", "preset": args.preset, "seed": args.seed, "images": args.images,
                 "write_files_s": round(time.perf_counter() - t0, 1)}
    try:
        subprocess.run([*CLI, "up", "--state", str(state)], check=True, capture_output=True, cwd=ROOT)
        t0 = time.perf_counter()
        _upload(folder, state, "fm-photos", "train/")
        out["upload_s"] = round(time.perf_counter() - t0, 1)
        own = ["--eval", "fashion-mnist", "--set", "data.normalize=fashion-mnist"]
        out["labelled"] = _run(state, args.preset, args.seed, args.set)
        out["folder"] = _run(state, args.preset, args.seed, args.set, "--data", str(folder), *own)
        out["s3_prefix"] = _run(state, args.preset, args.seed, args.set, "--data", "s3://fm-photos/train/", *own)
        probes = {k: out[k]["metrics"]["probe/top1"] for k in ("labelled", "folder", "s3_prefix")}
        out["probe/top1"] = probes
        out["identical"] = len(set(probes.values())) == 1
        print(json.dumps(out, indent=1))
    finally:
        subprocess.run([*CLI, "down", "--state", str(state)], capture_output=True, cwd=ROOT)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
