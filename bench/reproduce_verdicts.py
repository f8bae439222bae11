"""Re-judge a finished `simsiam reproduce` run with today's verdict rules, without training: read
its reproduce.json (a file, or the artifact of an MLflow parent run) and print JSON with the
verdict counts it was written with, the counts now, and every claim's verdict and why.

    python bench/reproduce_verdicts.py runs/reproduce-all/reproduce.json
    python bench/reproduce_verdicts.py --run-id <parent run id> --tracking-uri http://127.0.0.1:5000

The trials' numbers are read, never recomputed, so a run judged twice gives the same verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simsiam import metrics as M  # noqa: E402
from simsiam.config import load_config  # noqa: E402
from simsiam.reproduce import claim_rows, plan_trials, verdict_counts  # noqa: E402

# A trial's fields as reproduce.json named them before the one metric vocabulary (2026-12-07).
LEGACY = {"probe_top1": M.PROBE, "knn_top1": M.KNN_FINAL, "loss": M.LOSS, "z_std_ratio": M.Z_STD_RATIO}


def rejudge(report: dict) -> dict:
    """The claims of `report` (reproduce.json's fields) judged again from its trials' numbers."""
    claims, runs, alias = plan_trials(load_config(report["preset"]), report["suite"], report["seeds"])
    results = {t["trial"]: {LEGACY.get(k, k): v for k, v in t.items()} for row in report["rows"] for t in row["trials"]}
    rows = claim_rows(claims, runs, alias, results)
    then, now = [r["claim"] for r in report["rows"]], [c.words for c in claims]
    return {"suite": report["suite"], "preset": report["preset"], "seeds": report["seeds"],
            "claims_added_since": [w for w in now if w not in then],  # "no result": the run never ran them
            "claims_dropped_since": [w for w in then if w not in now],
            "verdicts_written": report["verdicts"], "verdicts_now": verdict_counts(rows),
            "rows": [{"table": r["table"], "claim": r["claim"], "paper": r["paper"], "verdict": r["verdict"],
                      "why": r["why"]} for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", nargs="?", help="a reproduce.json")
    ap.add_argument("--run-id", help="or: the MLflow parent run of a `simsiam reproduce --track`")
    ap.add_argument("--tracking-uri", help="the MLflow server of --run-id")
    args = ap.parse_args()
    if bool(args.report) == bool(args.run_id):
        ap.error("give a reproduce.json or --run-id, not both")
    path = args.report
    if args.run_id:
        import mlflow

        path = mlflow.artifacts.download_artifacts(run_id=args.run_id, artifact_path="reproduce.json",
                                                   tracking_uri=args.tracking_uri)
    print(json.dumps(rejudge(json.loads(Path(path).read_text())), indent=1))


if __name__ == "__main__":
    main()
