"""Step `reproduce`: the paper's claims as one grid on the sweep machinery (every trial runs its
full budget: no ASHA, collapse recorded, not stopped), then a claim-by-claim report beside the
paper's numbers: reproduce.md, reproduce.json and figures/reproduce_fig2.png, locally and on the
MLflow parent run."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from simsiam import metrics as M
from simsiam.results import Reproduction
from simsiam.steps.context import RunContext
from simsiam.steps.train import on_ray

if TYPE_CHECKING:
    from simsiam.ray import RayWorkers

RESULT = (M.PROBE, M.KNN_FINAL, M.LOSS, M.Z_STD_RATIO, "collapsed", "error")  # a trial's fields in the report


def reproduce(ctx: RunContext, suite: str, seeds: int, out: str | Path, workers: RayWorkers | None = None,
              max_concurrent: int | None = None) -> Reproduction:
    """Every trial of `suite` (the preset plus one switch) x `seeds`, to its full budget on Ray Tune
    (`workers` per trial: one, no restarts, by default), then the claim-by-claim report."""
    from simsiam.ray import RayWorkers, run_sweep
    from simsiam.reproduce import plan_trials
    from simsiam.reproduce.outputs import write_report

    cfg, tracking_uri = ctx.cfg, ctx.tracking_uri
    claims, runs, alias = plan_trials(cfg, suite, seeds)  # bad suite/seeds/switch: an error before any service

    t0 = time.perf_counter()
    specs = [{"name": r.name, "overrides": list(r.overrides), "tags": r.tags} for r in runs]
    name = f"reproduce-{suite}-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    res = run_sweep(cfg, {"spec": specs}, on_ray(ctx, workers or RayWorkers()), name=name,
                    max_concurrent=max_concurrent, early_stop=False,
                    parent_tags={"simsiam.reproduce": suite, "reproduce.seeds": str(seeds)}, final_eval=True)
    results = {row["name"]: {k: row[k] for k in RESULT} for row in res.rows}
    report = write_report(cfg, suite, seeds, claims, runs, alias, results, res.curves, Path(out),
                          time.perf_counter() - t0)
    if res.parent_run_id:
        from simsiam.tracking import log_files_to_run, run_url

        log_files_to_run(tracking_uri, res.parent_run_id, {report.report_md: None, report.report_json: None,
                                                           **({report.figure: "figures"} if report.figure else {})})
        report.mlflow_parent_run = run_url(tracking_uri, res.parent_run_id)
    return report
