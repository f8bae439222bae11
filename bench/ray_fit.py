"""The fixed cost of one Ray Train `fit()` (a worker that reports once), on a local Ray. Prints JSON.

    python bench/ray_fit.py --workers 1 --fits 3
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.5 python bench/ray_fit.py   # the test suite's poll interval
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from simsiam.library_env import apply_library_defaults


def _loop(config: dict) -> None:
    import ray.train

    ray.train.report({"x": 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--fits", type=int, default=3)
    args = parser.parse_args()
    apply_library_defaults()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ray.init(num_cpus=2, _temp_dir=f"{tmp}/ray", log_to_driver=False)
        init_s = time.perf_counter() - t0
        fits = []
        for i in range(args.fits):
            t = time.perf_counter()
            scaling = ScalingConfig(num_workers=args.workers, resources_per_worker={"CPU": 0.99})
            TorchTrainer(_loop, scaling_config=scaling,
                         run_config=RunConfig(name=f"fit-{i}", storage_path=f"{tmp}/runs")).fit()
            fits.append(round(time.perf_counter() - t, 1))
        ray.shutdown()
    print(json.dumps({"workers": args.workers, "ray_init_s": round(init_s, 1), "fit_s": fits,
                      "health_check_interval_s": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2 (default)")}))


if __name__ == "__main__":
    main()
