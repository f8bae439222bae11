"""Seeds x precision table of bench/quality.py: a quality claim is a mean over seeds, per precision.

Runs `bench/quality.py --no-baselines` once per (precision, seed), one after the other (each uses
every core), and prints JSON: one row per run (kNN, probe, probe train top-1, pretrain minutes),
then per precision the mean, worst and spread of the probe and kNN.

    python bench/quality_seeds.py --preset cpu-demo --seeds 0,1,2 --precisions bf16,fp32

`bf16` is bf16 autocast + channels_last, `fp32` is no autocast + contiguous: what `train.amp=auto`
picks on a CPU with and without native bf16. `fp32-avx2` is fp32 with torch's kernels (ATen, oneDNN,
MKL) capped at AVX2, a stand-in for an AVX2-only CPU on an AVX-512 one: the same instructions, not
the same clock or caches. `--set` applies to every run; the seed and precision settings of the
table win over it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

FP32 = ["train.amp=none", "train.channels_last=false"]
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
PRECISIONS = {"bf16": (["train.amp=bf16", "train.channels_last=true"], {}), "fp32": (FP32, {}),
              "fp32-avx2": (FP32, AVX2_CAPS)}  # settings, environment


def run_one(preset: str, precision: str, seed: int, extra: list[str]) -> dict:
    settings, env = PRECISIONS[precision]
    sets = [f"train.seed={seed}", *extra, *settings]  # the table's axes win over --set
    cmd = [sys.executable, str(Path(__file__).with_name("quality.py")), "--preset", preset, "--no-baselines"]
    cmd += [arg for s in sets for arg in ("--set", s)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
    out = json.loads(done.stdout)
    trained = out["trained"]
    return {"precision": precision, "seed": seed, "cpu_capability": out["cpu_capability"],
            "knn": round(trained["knn/final_top1"], 2),
            "probe": round(trained["probe/top1"], 2), "probe_train": round(trained["probe/train_top1"], 2),
            "pretrain_minutes": out["pretrain_minutes"], "steps": out["steps"], "collapsed": out["collapsed"]}


def summary(rows: list[dict]) -> dict:
    out = {}
    for key in ("probe", "knn"):
        vals = [r[key] for r in rows]
        out[key] = {"mean": round(statistics.mean(vals), 2), "worst": min(vals),
                    "spread": round(max(vals) - min(vals), 2)}
    out["pretrain_minutes_mean"] = round(statistics.mean(r["pretrain_minutes"] for r in rows), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--seeds", default="0,1,2", help="comma list")
    ap.add_argument("--precisions", default="bf16,fp32", help=f"comma list of {', '.join(PRECISIONS)}")
    ap.add_argument("--set", action="append", default=[], help="config override key=value, for every run")
    args = ap.parse_args()
    rows = []
    for precision in args.precisions.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(run_one(args.preset, precision, seed, args.set))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    by_precision = {p: summary([r for r in rows if r["precision"] == p]) for p in args.precisions.split(",")}
    print(json.dumps({"preset": args.preset, "overrides": args.set, "runs": rows, "summary": by_precision}, indent=2))


if __name__ == "__main__":
    main()
