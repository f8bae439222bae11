"""Reproduction benchmark: run a `simsiam reproduce` suite to the end on this machine and print JSON
with its wall time, trial count and one line per claim (table, paper, ours, verdict). The full
report lands in --out (reproduce.md, reproduce.json, figures/reproduce_fig2.png).

    python bench/reproduce.py --suite all --preset reproduce-cpu --seeds 3 --out runs/reproduce-all

Uses the embedded S3 in --state (Ray Tune's storage); --track also logs to the embedded MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simsiam import steps  # noqa: E402
from simsiam.config import load_config  # noqa: E402
from simsiam.ray import RayWorkers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="all", help="collapse | ablations | em | all")
    ap.add_argument("--preset", default="reproduce-cpu")
    ap.add_argument("--seeds", type=int, default=3, help="paired seeds per trial")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--out", default=None, help="report directory [runs/reproduce-<suite>]")
    ap.add_argument("--state", default=None, help="embedded services' state dir [$SIMSIAM_STATE or ./.simsiam]")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0, help="fractional GPU per trial (e.g. 0.25)")
    ap.add_argument("--track", action="store_true", help="also log to MLflow (embedded server)")
    args = ap.parse_args()
    for k in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"):
        os.environ.setdefault(k, "when_required")
    cfg = load_config(args.preset, args.set)
    ctx = steps.RunContext.open(cfg, args.state, tracking=args.track)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Tune's trial tables: stdout stays one JSON object
        res = steps.reproduce(ctx, args.suite, args.seeds, args.out or f"runs/reproduce-{args.suite}",
                              RayWorkers(1, args.gpus_per_worker, 1.0, 0)).to_dict()
    claims = [{"table": r["table"], "claim": r["claim"], "paper": r["paper"], "ours": r["ours_mean"],
               "ours_spread": r["ours_spread"], "vs": r.get("vs_mean"), "collapsed": r["collapsed"],
               "verdict": r["verdict"]} for r in res["rows"]]
    print(json.dumps({"bench": "reproduce", "suite": args.suite, "preset": args.preset, "seeds": args.seeds,
                      "wall_s": round(time.perf_counter() - t0, 1), "report_md": res["report_md"],
                      "mlflow_parent_run": res["mlflow_parent_run"], "verdicts": res["verdicts"], "claims": claims},
                     indent=2))


if __name__ == "__main__":
    main()
