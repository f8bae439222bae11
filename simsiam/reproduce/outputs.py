"""What a finished reproduction writes: the claim-by-claim report as markdown and JSON, and the
paper's Fig. 2 on our data."""

from __future__ import annotations

import json
from pathlib import Path

from simsiam.config import Config
from simsiam.reproduce.figure import fig2
from simsiam.reproduce.report import claim_rows, render_markdown, verdict_counts
from simsiam.results import Reproduction


def write_report(cfg: Config, suite: str, seeds: int, claims, runs, alias, results, curves, out: Path,
                 wall_s: float) -> Reproduction:
    """reproduce.md, reproduce.json and, when the grid has Fig. 2's trials, figures/reproduce_fig2.png
    under `out`, from the trials' `results` (run name -> metrics) and epoch-end `curves`."""
    rows = claim_rows(claims, runs, alias, results)
    probe_on = f"{cfg.eval.probe_train_samples} train images" if cfg.eval.probe_train_samples else "the train split"
    notes = [f"Preset `{cfg.name}`, suite `{suite}`, {seeds} paired seed(s), {len(runs)} trials, "
             f"{wall_s / 60:.2f} min on this machine. Each trial is the preset plus one switch; ours is its "
             f"linear probe top-1 on the full {cfg.data.dataset} test split (fit on {probe_on}, the same for "
             f"every trial) after {cfg.train.epochs} epochs, the paper's the ImageNet linear probe after 100 "
             "epochs, so compare orderings, collapse and gaps scaled to our error, not values.",
             "Seed s of every trial shares the init, data order and augmentations. An ordering 'holds' when "
             "the first trial wins on every seed and the mean paired gap passes a one-sided paired t-test "
             "(95%). Where the paper gives two accuracies, its relative cut in error is applied to ours; when "
             "the gap's 95% upper bound is below that, an effect the paper's size is ruled out: 'holds but "
             "smaller than the paper's', or 'smaller than the paper's' where the ordering is not shown. "
             "Collapse means final z_std * sqrt(d) < 0.1."]
    out.mkdir(parents=True, exist_ok=True)
    md, js, verdicts = out / "reproduce.md", out / "reproduce.json", verdict_counts(rows)
    md.write_text(render_markdown(rows, f"SimSiam reproduction: {suite}", notes))
    js.write_text(json.dumps({"suite": suite, "preset": cfg.name, "seeds": seeds, "wall_s": round(wall_s, 1),
                              "verdicts": verdicts, "rows": rows}, indent=2))
    fig = None
    pairs = {"w/ stop-grad": "baseline", "w/o stop-grad": "no_stop_grad"}
    if all(any(r.key == key for r in runs) for key in pairs.values()):
        fig = fig2({label: [curves.get(r.name, []) for r in runs if r.key == key] for label, key in pairs.items()},
                   out / "figures" / "reproduce_fig2.png")
    return Reproduction(report_md=str(md), report_json=str(js), figure=str(fig) if fig else None,
                        wall_s=round(wall_s, 1), verdicts=verdicts, rows=rows)
