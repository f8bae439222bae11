"""Ray Tune's cost per sweep trial on this machine: a small `reproduce`-style grid (one trial per seed,
each with the final kNN and linear probe) on a local Ray, against the same trial's work done in
this process on one thread. Prints JSON.

    python bench/sweep_overhead.py                       # 4 trials of reproduce-cpu at 1 epoch, 2 at a time
    python bench/sweep_overhead.py --trials 6 --set train.epochs=2

`overhead_per_trial_s` is a trial's mean Tune time (`time_total_s`) less the in-process time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from simsiam.config import load_config  # noqa: E402

SMALL = ["train.epochs=1", "data.train_subset=4096", "eval.probe_train_samples=4000", "eval.probe_epochs=10",
         "data.download=false"]


def in_process(cfg) -> float:
    """One trial's work (train, then the final evaluation) in this process, on one thread."""
    import torch

    from simsiam.engine import train
    from simsiam.evaluation import evaluate_backbone
    from simsiam.runtime import resolve_precision
    from simsiam.storage.sources import open_sources

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train_src, test_src = open_sources(cfg, need_test=True)
    result = train(cfg, train_source=train_src, test_source=test_src)
    amp = resolve_precision(cfg.train.amp, cfg.train.channels_last, torch.device("cpu"))[0]
    evaluate_backbone(result.model.backbone, cfg, train_src, test_src, torch.device("cpu"), amp=amp)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="reproduce-cpu")
    ap.add_argument("--trials", type=int, default=4, help="trials (seeds 0..n-1)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value, after the small ones")
    args = ap.parse_args()
    from simsiam.ray import RayWorkers, init_ray, run_sweep

    cfg = load_config(args.preset, SMALL + args.set)
    specs = [{"name": f"seed{s}", "overrides": [f"train.seed={s}"]} for s in range(args.trials)]
    with tempfile.TemporaryDirectory() as tmp:
        init_ray(num_cpus=2)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Tune's trial tables: stdout stays one JSON object
            res = run_sweep(cfg, {"spec": specs}, RayWorkers(local_storage=f"{tmp}/runs", max_failures=0),
                            early_stop=False, final_eval=True)
        wall = time.perf_counter() - t0
    import ray

    trial_s = [round(float(r["time_s"]), 1) for r in res.rows]
    ray.shutdown()
    work = in_process(load_config(args.preset, SMALL + args.set + ["eval.knn_every_epochs=1"]))
    print(json.dumps({"bench": "sweep_overhead", "preset": args.preset, "trials": args.trials,
                      "errors": [r["error"] for r in res.rows if r["error"]], "sweep_wall_s": round(wall, 1),
                      "trial_s": trial_s, "in_process_trial_s": round(work, 1),
                      "overhead_per_trial_s": round(statistics.mean(trial_s) - work, 1)}, indent=2))


if __name__ == "__main__":
    main()
