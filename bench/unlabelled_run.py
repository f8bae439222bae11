"""End to end without any labels: Fashion-MNIST training images written as unlabelled PNG files in a
folder, then `simsiam run --data DIR` twice (seeds 0 and 1) with no evaluation data. The first ends
with a champion gated on the label-free judge (RankMe by default); the second is gated against it.
Prints JSON: each run's label-free metrics, version, decision and the gate's reasons, and the
registry as `simsiam models ls` lists it.

    python bench/unlabelled_run.py --images 20000        # two cpu-demo runs: ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
CLI = [sys.executable, "-m", "simsiam.cli"]


def _cli(*args: str) -> str:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT,
                       env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")})
    if r.returncode != 0:
        raise SystemExit(f"simsiam {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def _run(state: Path, folder: Path, preset: str, seed: int, sets: list[str]) -> dict:
    t0 = time.perf_counter()
    sets = [a for s in [f"train.seed={seed}", *sets] for a in ("--set", s)]
    stdout = _cli("run", "--preset", preset, "--data", str(folder), "--state", str(state), *sets)
    out = json.loads(stdout[stdout.index("{\n"):])
    reg = out["registered"]
    return {"seed": seed, "wall_s": round(time.perf_counter() - t0, 1), "metrics": out["metrics"],
            "eval_set": out["eval_set"], "label_free_set": out["label_free_set"], "run_id": out["run_id"],
            "version": reg["version"], "decision": reg["decision"], "reasons": reg["reasons"]}


def main() -> None:
    from own_images import _write_files

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--set", action="append", default=[], help="config override for both runs (quick checks)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="simsiam-bench-unlabelled-"))
    state, folder = tmp / "state", tmp / "photos"
    os.environ["SIMSIAM_CACHE"] = str(tmp / "cache")
    _write_files(folder, args.images)
    try:
        runs = [_run(state, folder, args.preset, seed, args.set) for seed in (0, 1)]
        listing = _cli("models", "ls", "--state", str(state))
    finally:
        _cli("down", "--state", str(state))
    print(json.dumps({"images": args.images, "preset": args.preset, "runs": runs, "models_ls": listing}, indent=1))


if __name__ == "__main__":
    main()
