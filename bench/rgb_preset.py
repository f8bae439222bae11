"""The laptop RGB preset (`cpu-rgb`) on a folder of images, as a user would run it:
`simsiam run -p cpu-rgb --data DIR --eval fashion-mnist`, with the wall time, the run process's
peak RSS and the run's metrics. Prints JSON.

    python bench/rgb_preset.py --images 60000 --seed 0      # ~10-20 min on 2 cores

No RGB dataset is on a fresh machine (nothing downloads), so the folder holds Fashion-MNIST's
training images as PNG files and the evaluation is Fashion-MNIST: the speed and memory are those of
32 px RGB training; the accuracy is on grey pixels repeated to three channels.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from own_images import CLI, ROOT, _run, _write_files  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=60_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="config override (quick checks)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="simsiam-bench-rgb-"))
    state, folder = tmp / "state", tmp / "photos"
    _write_files(folder, args.images)
    try:
        subprocess.run([*CLI, "up", "--state", str(state)], check=True, capture_output=True, cwd=ROOT)
        run = _run(state, "cpu-rgb", args.seed, args.set, "--data", str(folder), "--eval", "fashion-mnist")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"bench": "rgb_preset", "preset": "cpu-rgb", "images": args.images, "seed": args.seed,
                          "peak_rss_mib": round(peak), **run}, indent=1))
    finally:
        subprocess.run([*CLI, "down", "--state", str(state)], capture_output=True, cwd=ROOT)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
