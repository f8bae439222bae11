"""Where the time of `simsiam run` goes, and what the pipeline costs over bare training; prints JSON.

    python bench/pipeline.py --preset cpu-demo            # ~15 min on 2 CPU cores

Runs what `simsiam run` runs, in a fresh state dir: start SeaweedFS + MLflow, then the Prefect
`pipeline` flow (ephemeral API), and splits its wall time by task: staging, training, evaluation,
registry; the rest is orchestration (Prefect start-up, subflows, artifacts). Then runs bare
`simsiam pretrain` (local files, no tracking, no Prefect) for the same training work and reports
pipeline / bare. `--second-run` adds a second pipeline run, whose staging is a cache hit.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--subset", type=int, default=None, help="stage only N samples per split")
    ap.add_argument("--second-run", action="store_true", help="time a second run too (cached staging)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="simsiam-bench-pipeline-"))
    state = tmp / "state"
    from simsiam.services import prefect_env, start_mlflow, stop_mlflow, stop_s3

    for k, v in prefect_env(state).items():  # before Prefect is imported, as `simsiam run` does
        os.environ[k] = v
    os.environ.pop("PREFECT_API_URL", None)
    from simsiam.config import load_config

    cfg = load_config(args.preset, args.set)
    out: dict = {"preset": args.preset, "overrides": args.set, "subset": args.subset}
    try:
        t0 = time.perf_counter()
        uri = start_mlflow(state).tracking_uri  # starts S3 first
        out["service_start_s"] = round(time.perf_counter() - t0, 1)
        out["first_run"] = _timed_pipeline(cfg, uri, state, args.subset)
        if args.second_run:
            out["second_run"] = _timed_pipeline(cfg, uri, state, args.subset)
    finally:
        stop_mlflow(state)
        stop_s3(state)

    cmd = [sys.executable, "-m", "simsiam.cli", "pretrain", "--preset", args.preset, "--out", str(tmp / "bare"),
           "--no-progress"] + [a for s in args.set for a in ("--set", s)]
    if args.subset:
        cmd += ["--set", f"data.train_subset={min(args.subset, cfg.data.train_subset or args.subset)}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    out["bare_pretrain_s"] = round(time.perf_counter() - t0, 1)
    total = out["service_start_s"] + out["first_run"]["wall_s"]
    out["pipeline_total_s"] = round(total, 1)
    out["ratio_pipeline_over_bare"] = round(total / out["bare_pretrain_s"], 3)
    print(json.dumps(out, indent=2))


def _timed_pipeline(cfg, uri: str, state: Path, subset: int | None) -> dict:
    import datetime as dt

    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    from flows.pipeline import pipeline

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    res = pipeline(config=cfg, subset=subset, mlflow_uri=uri, state=str(state))  # the flow opens its own context
    wall = time.perf_counter() - t0
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=started)))
    phases = {"staging": 0.0, "training": 0.0, "evaluation": 0.0, "registry": 0.0}
    for tr in runs:
        secs = tr.total_run_time.total_seconds()
        if tr.name.startswith("stage-"):
            phases["staging"] += secs
        elif tr.name.startswith("train-"):
            phases["training"] += secs
        elif tr.name == "evaluate":
            phases["evaluation"] += secs
        elif tr.name == "register":
            phases["registry"] += secs
    phases = {f"{k}_s": round(v, 1) for k, v in phases.items()}
    return {"wall_s": round(wall, 1), **phases,
            "orchestration_s": round(wall - sum(phases.values()), 1), "uploaded_objects": res["uploaded_objects"],
            "decision": (res.get("registered") or {}).get("decision"), "probe/top1": res["metrics"]["probe/top1"],
            "knn/final_top1": res["metrics"]["knn/final_top1"]}


if __name__ == "__main__":
    main()
