"""How fast the registered encoder is to consume: a fresh Python process that imports mlflow, loads
`models:/<name>/1` (the pyfunc: ONNX graph + onnxruntime) and answers a first prediction, and
`simsiam models ls` as a user runs it. A cpu-demo backbone (untrained: the cost does not depend on
the weights) is logged and registered on a real MLflow server (SeaweedFS artifacts) first. Prints JSON.

    python bench/model_load.py              # 3 fresh processes each: ~1 min on 2 cores
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
CONSUMER = """
import json, sys, time
t0 = time.perf_counter()
import mlflow
import numpy as np
t1 = time.perf_counter()
model = mlflow.pyfunc.load_model(sys.argv[1])
features = model.predict(np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32))
t2 = time.perf_counter()
heavy = ("torch", "torchvision", "ray", "prefect", "simsiam")
print(json.dumps({"import_mlflow_s": t1 - t0, "load_and_first_predict_s": t2 - t1, "features": features.shape,
                  "imported": [m for m in heavy if m in sys.modules]}))
"""


def _registered(tracking_uri: str) -> str:
    import mlflow

    from simsiam.config import load_config
    from simsiam.models import build_model
    from simsiam.tracking import create_run, log_models_to_run
    from simsiam.tracking.runs import tracking_uri_scope

    cfg = load_config("cpu-demo", ["train.device=cpu"])
    run_id = create_run(tracking_uri, "model-load", "model-load-bench")
    uris = log_models_to_run(tracking_uri, run_id, build_model(cfg.model), cfg)
    with tracking_uri_scope(tracking_uri):
        version = mlflow.register_model(uris["backbone"], "simsiam-load-bench").version
        mlflow.MlflowClient().set_registered_model_alias("simsiam-load-bench", "champion", version)
    return f"models:/simsiam-load-bench/{version}"


def _onnx_by_alias(tracking_uri: str) -> list[int]:
    """The README's onnxruntime line: the champion's graph by its alias, features of 2 images."""
    import mlflow
    import numpy as np
    import onnxruntime as ort

    from simsiam.tracking.runs import tracking_uri_scope

    with tracking_uri_scope(tracking_uri):
        path = mlflow.artifacts.download_artifacts("models:/simsiam-load-bench@champion/artifacts/backbone.onnx")
    images = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    return list(ort.InferenceSession(path).run(None, {"images": images})[0].shape)


def _timed(args: list[str], env: dict, cwd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from simsiam.library_env import apply_library_defaults
    from simsiam.services import start_mlflow, start_s3, stop_mlflow, stop_s3

    apply_library_defaults()
    state = Path(tempfile.mkdtemp(prefix="simsiam-load-"))
    start_s3(state)
    ml = start_mlflow(state)
    try:
        uri = _registered(ml.tracking_uri)
        onnx_shape = _onnx_by_alias(ml.tracking_uri)
        env = {**os.environ, "MLFLOW_TRACKING_URI": ml.tracking_uri}
        loads, listings = [], []
        for _ in range(args.repeats):
            wall, out = _timed([sys.executable, "-c", CONSUMER, uri], env, str(state))
            loads.append({**json.loads(out.strip().splitlines()[-1]), "process_wall_s": wall})
            wall, out = _timed([sys.executable, "-m", "simsiam.cli", "models", "ls", "--tracking-uri",
                                ml.tracking_uri], env, str(state))
            listings.append(wall)
    finally:
        stop_mlflow(state)
        stop_s3(state)
    best = min(loads, key=lambda r: r["load_and_first_predict_s"])
    print(json.dumps({"model_uri": uri, "load_and_first_predict_s": [round(r["load_and_first_predict_s"], 2)
                                                                     for r in loads],
                      "import_mlflow_s": [round(r["import_mlflow_s"], 2) for r in loads],
                      "imported_heavy_modules": best["imported"], "features": best["features"],
                      "models_ls_wall_s": [round(s, 2) for s in listings],
                      "onnx_by_alias_features": onnx_shape}, indent=2))


if __name__ == "__main__":
    main()
