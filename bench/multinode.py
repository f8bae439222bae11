"""`bench/distributed.py --nodes`: img/s, per-step time and S3 reads per worker on simulated
multi-node Ray clusters (a head with no CPU for work plus N one-CPU nodes, each with its own cache
dir), streaming one staged Fashion-MNIST version from the embedded SeaweedFS."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from simsiam.config import load_config
from simsiam.data import load_fashion_mnist
from simsiam.ray import RayWorkers, pretrain_distributed
from simsiam.ray.cluster import export_credentials
from simsiam.services import start_s3, stop_s3
from simsiam.storage import S3Settings, open_store, stage_dataset
from simsiam.testing.faults import WeightsDigest


def _stage(settings: S3Settings, samples: int, shards: int) -> dict:
    source = load_fashion_mnist("train", download=False).subset(range(samples))
    return stage_dataset(source, open_store(settings), "bench-nodes", shard_size=samples // shards, progress=False)[1]


def _fit(cfg, dist: RayWorkers, name: str, reporters=()) -> float:
    t0 = time.perf_counter()
    pretrain_distributed(cfg, dist, name=name, reporters=reporters)
    return time.perf_counter() - t0


def _one_count(nodes: int, preset: str, sets: list[str], manifest: dict, settings: S3Settings, state: Path,
               tmp: Path) -> dict:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for i in range(nodes):
        cluster.add_node(num_cpus=1, env_vars={"SIMSIAM_CACHE": str(tmp / f"cache-{nodes}-{i}")})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)  # stdout is the JSON only
    try:
        dist = RayWorkers(nodes, cpus_per_worker=1, placement_strategy="SPREAD", storage=settings, max_failures=0,
                          state_path=str(state))
        base = sets + ["data.source=bench-nodes@latest", "data.stream=true", "data.train_subset=null",
                       "eval.knn_every_epochs=0", "eval.knn_at_start=false"]
        reads = tmp / f"reads-{nodes}"
        reads.mkdir()
        # the ranks' shard reads: reads/<run name>/rank<N>.reads.json
        one = _fit(load_config(preset, base + ["train.epochs=1"]), dist, f"bench-{nodes}-1",
                   [WeightsDigest(reads / f"bench-{nodes}-1")])
        two = _fit(load_config(preset, base + ["train.epochs=2"]), dist, f"bench-{nodes}-2")
        cfg = load_config(preset, base)
        steps = sum(s["count"] for s in sorted(manifest["shards"], key=lambda s: s["count"])
                    [:len(manifest["shards"]) // nodes]) // (cfg.train.batch_size // nodes)
        epoch = two - one  # start-up and the first epoch's warm-up cancel
        per_worker = [sum(b for _, b, p in json.loads((reads / f"bench-{nodes}-1" / f"rank{r}.reads.json")
                                                       .read_text())["reads"]
                          if p == "train/0") for r in range(nodes)]
        timed = epoch > 0  # else the epoch is shorter than the timing noise (tiny settings): no rates
        return {"nodes": nodes, "img_per_s": round(steps * cfg.train.batch_size / epoch, 1) if timed else None,
                "step_ms": round(1000 * epoch / steps, 1) if timed else None, "steps_per_epoch": steps,
                "fit_fixed_overhead_s": round(one - epoch, 1), "s3_bytes_read_per_worker": per_worker}
    finally:
        ray.shutdown()
        cluster.shutdown()


def bench_nodes(preset: str, sets: list[str], counts: list[int], shards: int, steps: int) -> dict:
    """One row per node count; `dataset_bytes` beside each row's per-worker S3 reads of one epoch."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        state = tmp / "state"
        svc = start_s3(state)
        settings = S3Settings(endpoint_url=svc.endpoint_url, access_key=svc.access_key, secret_key=svc.secret_key)
        export_credentials(settings)  # the nodes' workers inherit the keys
        try:
            batch = load_config(preset, sets).train.batch_size
            manifest = _stage(settings, batch * steps, shards)
            rows = [_one_count(n, preset, sets, manifest, settings, state, tmp) for n in counts]
        finally:
            stop_s3(state)
    for row in rows:
        if row["img_per_s"] and rows[0]["img_per_s"]:
            base = rows[0]["img_per_s"] / rows[0]["nodes"]
            row["scaling_efficiency"] = round(row["img_per_s"] / (base * row["nodes"]), 2)
            row["step_overhead_ms_vs_first"] = round(row["step_ms"] - rows[0]["step_ms"], 1)  # same global batch
    return {"preset": preset, "set": sets, "batch": batch, "dataset_bytes": manifest["total_bytes"],
            "shards": len(manifest["shards"]), "samples": manifest["num_samples"], "rows": rows,
            "note": "simulated nodes share this machine's cores: efficiency here measures Ray/DDP/S3 overhead, "
                    "not network scaling"}
