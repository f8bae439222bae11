"""The fault matrix at full length: each service cut off for 60 s (a TCP proxy in front of it that
refuses and drops connections, as a killed server does) while a run uses it. Real SeaweedFS, MLflow
server and a local Ray. Prints JSON: one row per fault with what it hit, the outcome, the exact step
count and the MLflow run id. The short versions of these faults are tests (tests/test_outages.py,
tests/test_storage.py).

    python bench/outages.py                 # 60 s cuts: ~8 min on 2 cores
    python bench/outages.py --seconds 10    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Tiny network and data: the faults, not the training, are under test (as in tests/conftest.py TINY).
TINY = ["model.width=4", "model.head_conv=null", "model.dim=32", "model.pred_dim=8", "train.device=cpu",
        "train.amp=none", "train.channels_last=false", "data.download=false", "eval.knn_every_epochs=0",
        "train.batch_size=16", "data.train_subset=64", "eval.label_free_samples=256", "eval.label_free_pairs=64",
        "tracking.system_metrics=false", "tracking.flush_every_steps=2"]


def _settings(s3, url: str, budget: float):
    from simsiam.storage import S3Settings

    return S3Settings(endpoint_url=url, access_key=s3.access_key, secret_key=s3.secret_key, outage_budget_s=budget)


def _cut_during(proxy, seconds: float, after, call) -> tuple[object, float]:
    """`call()` in a thread; once `after()` is true, `proxy` is cut for `seconds`. Returns (result, wall s)."""
    out: dict = {}
    t0 = time.perf_counter()
    thread = threading.Thread(target=lambda: out.update(res=call()))
    thread.start()
    while not after():
        if not thread.is_alive():
            raise SystemExit("the run ended before the fault could be injected")
        time.sleep(0.2)
    proxy.cut(seconds)
    thread.join()
    if "res" not in out:
        raise SystemExit("the run failed during the outage (see its error above)")
    return out["res"], round(time.perf_counter() - t0, 1)


def staging(s3, proxy, seconds: float) -> dict:
    from simsiam.data import load_fashion_mnist
    from simsiam.storage import open_store, stage_dataset
    from simsiam.testing.faults import AfterPut

    store = open_store(_settings(s3, proxy.url, 2 * seconds))
    images = load_fashion_mnist("test", download=False).subset(range(2000))
    first = threading.Event()
    hooked = AfterPut(store, lambda key: first.set())
    (ref, manifest), wall = _cut_during(proxy, seconds, first.is_set, lambda: stage_dataset(
        images, hooked, f"outage-{int(time.time())}", "test", shard_size=200, progress=False))
    return {"fault": f"S3 {seconds:.0f} s", "hit": "staging (2,000 images, 10 shards)", "wall_s": wall,
            "outcome": f"staged {ref.uri}: {len(manifest['shards'])} shards, manifest last"}


def ray_run(s3, ml, proxy, seconds: float, what: str, state: Path) -> dict:
    from mlflow import MlflowClient

    from simsiam.config import load_config
    from simsiam.ray import RayWorkers, pretrain_distributed
    from simsiam.storage import open_store
    from simsiam.testing.faults import Pace

    cfg = load_config("cpu-demo", [*TINY, "train.epochs=8", "train.checkpoint_every_steps=2",
                                   f"storage.outage_budget_s={2 * seconds}"])
    s3_url = proxy.url if what == "S3" else s3.endpoint_url
    ml_url = proxy.url if what == "MLflow" else ml.tracking_uri
    dist = RayWorkers(storage=_settings(s3, s3_url, 2 * seconds), tracking_uri=ml_url, experiment="outages",
                      state_path=str(state))
    name = f"outage-{what.lower()}-{int(time.time())}"
    direct = open_store(_settings(s3, s3.endpoint_url, 120))
    saved = lambda: direct.head(f"ray/{name}/checkpoint_manager_snapshot.json") is not None  # noqa: E731
    res, wall = _cut_during(proxy, seconds, saved, lambda: pretrain_distributed(cfg, dist, name=name,
                                                                                reporters=[Pace(2.0)]))
    client = MlflowClient(ml.tracking_uri)
    history = sorted(m.step for m in client.get_metric_history(res.run_id, "train/loss"))
    return {"fault": f"{what} {seconds:.0f} s", "hit": "Ray Train run (1 worker, checkpoints to S3 every 2 steps)",
            "wall_s": wall, "steps": res.steps, "planned_steps": 8 * 4, "mlflow_run_id": res.run_id,
            "run_status": client.get_run(res.run_id).info.status, "logged_steps": len(history),
            "history_continuous": history == list(range(1, res.steps + 1)),
            "resumed_from_step": res.resumed_from_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each outage")
    args = ap.parse_args()
    from simsiam.library_env import apply_library_defaults

    apply_library_defaults()
    import ray

    from simsiam.ray import init_ray
    from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_s3
    from simsiam.testing.outage import OutageProxy

    state = Path(tempfile.mkdtemp(prefix="simsiam-outages-"))
    s3, ml = start_s3(state), start_mlflow(state)
    rows = []
    try:
        init_ray(num_cpus=2, storage=_settings(s3, s3.endpoint_url, 120))
        s3_proxy, ml_proxy = OutageProxy(s3.endpoint_url), OutageProxy(ml.tracking_uri)
        rows.append(staging(s3, s3_proxy, args.seconds))
        rows.append(ray_run(s3, ml, s3_proxy, args.seconds, "S3", state))
        rows.append(ray_run(s3, ml, ml_proxy, args.seconds, "MLflow", state))
    finally:
        ray.shutdown()
        stop_mlflow(state)
        stop_s3(state)
    print(json.dumps({"seconds": args.seconds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
