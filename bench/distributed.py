"""Ray Train overhead and scaling on this machine; prints JSON.

    python bench/distributed.py --preset cpu-demo --steps 40
    python bench/distributed.py --preset cpu-demo --nodes 1,2,4 --shards 16

Measures images/s of the bare engine loop (this process), of Ray Train with 1 worker and with 2
workers (DDP, gloo on CPU / NCCL on GPU), plus the fixed start-up cost of a Ray Train `fit()`
and the per-step overhead of Ray Train vs the bare loop.

With --nodes, each count N starts a simulated multi-node cluster (`ray.cluster_utils.Cluster`: a
head with no CPU for work and N one-CPU nodes) and trains N workers, one per node, streaming a
staged Fashion-MNIST version from the embedded S3 (see bench/multinode.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from simsiam.config import load_config  # noqa: E402
from simsiam.engine import train  # noqa: E402
from simsiam.ray import RayWorkers, init_ray, pretrain_distributed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per measured run")
    ap.add_argument("--gpu", action="store_true", help="Ray workers on GPUs")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--nodes", help="comma list of simulated node counts, e.g. 1,2,4 (multi-node mode)")
    ap.add_argument("--shards", type=int, default=16, help="shards of the staged version (--nodes)")
    args = ap.parse_args()
    if args.nodes:
        from multinode import bench_nodes

        print(json.dumps(bench_nodes(args.preset, args.set, [int(n) for n in args.nodes.split(",")], args.shards,
                                     args.steps), indent=2))
        return
    base = load_config(args.preset, args.set + ["eval.knn_every_epochs=0", "eval.knn_at_start=false"])
    batch = base.train.batch_size
    subset = batch * args.steps
    overrides = args.set + ["eval.knn_every_epochs=0", "eval.knn_at_start=false", f"data.train_subset={subset}",
                            "train.epochs=1"]

    def measure(cfg_over, steps):
        return load_config(args.preset, cfg_over + [f"train.max_steps={steps}"])

    out: dict = {"preset": args.preset, "batch": batch, "steps": args.steps}
    # Bare engine loop: a short and a long run; the difference cancels start-up (data load, model build).
    t0 = time.perf_counter()
    train(measure(overrides, 2))
    short = time.perf_counter() - t0
    t0 = time.perf_counter()
    train(measure(overrides, args.steps))
    long = time.perf_counter() - t0
    bare_step = (long - short) / (args.steps - 2)
    out["bare"] = {"img_per_s": round(batch / bare_step, 1), "step_ms": round(1000 * bare_step, 1)}

    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            dist = RayWorkers(workers, gpus_per_worker=1.0 if args.gpu else 0.0,
                              cpus_per_worker=0.99 if not args.gpu else 1, local_storage=tmp, max_failures=0)
            t0 = time.perf_counter()
            pretrain_distributed(measure(overrides, 2), dist, name=f"bench-short-{workers}")
            short = time.perf_counter() - t0
            t0 = time.perf_counter()
            pretrain_distributed(measure(overrides, args.steps), dist, name=f"bench-long-{workers}")
            long = time.perf_counter() - t0
            step = (long - short) / (args.steps - 2)
            out[f"ray_{workers}_workers"] = {"img_per_s": round(batch / step, 1), "step_ms": round(1000 * step, 1),
                                             "fit_fixed_overhead_s": round(short - 2 * step, 1)}
    out["ray_step_overhead_ms_vs_bare"] = round(out["ray_1_workers"]["step_ms"] - out["bare"]["step_ms"], 1)
    out["speedup_2_vs_1_workers"] = round(out["ray_2_workers"]["img_per_s"] / out["ray_1_workers"]["img_per_s"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
