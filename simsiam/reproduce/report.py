"""Verdicts and the report. A verdict says only what the numbers show:

- `healthy` / `collapses`: the collapse diagnostic (z_std * sqrt(d) < 0.1 is collapsed) on every seed;
- `greater` (a beats b): "holds" only when the gap of the means is larger than the two spreads
  (half the max-min range over seeds) together; the reverse gap gives "does not hold"; anything
  closer, or a single seed, is "inconclusive at this budget".
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Literal

from simsiam.reproduce.suites import Claim, TrialRun

Verdict = Literal["holds", "does not hold at this budget", "inconclusive at this budget", "measured", "no result"]


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None, None
    return statistics.fmean(values), (max(values) - min(values)) / 2


def verdict(claim: Claim, knn: dict[str, list[float]], collapsed: dict[str, list[bool]]) -> tuple[Verdict, str]:
    """(verdict, why) for `claim` from per-trial-key lists over seeds."""
    if any(not knn.get(k) for k in claim.trials):
        return "no result", "a trial failed or did not run"
    if claim.kind == "measured":
        return "measured", "no paper claim to test"
    if claim.kind in ("healthy", "collapses"):
        flags = [f for k in claim.trials for f in collapsed[k]]
        want = claim.kind == "collapses"
        n_ok = sum(f == want for f in flags)
        if n_ok == len(flags):
            return "holds", f"{n_ok}/{len(flags)} runs {'collapsed' if want else 'healthy'}"
        if n_ok == 0:
            return "does not hold at this budget", f"0/{len(flags)} runs {'collapsed' if want else 'healthy'}"
        return "inconclusive at this budget", f"{n_ok}/{len(flags)} runs {'collapsed' if want else 'healthy'}"
    (ma, sa), (mb, sb) = _stats(knn[claim.trials[0]]), _stats(knn[claim.trials[1]])
    if ma is None or mb is None:
        return "no result", "a kNN value is missing"
    if min(len(knn[claim.trials[0]]), len(knn[claim.trials[1]])) < 2:
        return "inconclusive at this budget", "one seed: no spread to compare the gap with"
    gap, noise = ma - mb, sa + sb
    why = f"gap {gap:+.2f} vs spread {noise:.2f}"
    if gap > noise:
        return "holds", why
    if -gap > noise:
        return "does not hold at this budget", why
    return "inconclusive at this budget", why


def claim_rows(claims: list[Claim], runs: list[TrialRun], alias: dict[str, str],
               results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim: the fields of reproduce.json. `results`: run name -> z_std_ratio, knn_top1,
    collapsed (and optionally run_id)."""
    trials: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        res = results.get(run.name)
        if res is not None and res.get("knn_top1") is not None:
            trials.setdefault(run.key, []).append({"trial": run.name, "seed": run.seed, **res})
    per_key = {k: trials.get(alias[k], []) for k in alias}
    knn = {k: [t["knn_top1"] for t in v] for k, v in per_key.items()}
    collapsed = {k: [bool(t["collapsed"]) for t in v] for k, v in per_key.items()}
    rows = []
    for c in claims:
        v, why = verdict(c, knn, collapsed)
        mean, spread = _stats(knn.get(c.trials[0], []))
        row = {"claim": c.words, "table": c.table, "suite": c.suite, "kind": c.kind, "paper": c.paper,
               "ours_mean": mean, "ours_spread": spread, "seeds": len(knn.get(c.trials[0], [])),
               "collapsed": collapsed.get(c.trials[0], []) if c.kind == "greater" else
               [f for k in c.trials for f in collapsed.get(k, [])], "verdict": v, "why": why,
               "trials": [t for k in c.trials for t in per_key.get(k, [])]}
        if c.kind == "greater":
            row["vs_mean"], row["vs_spread"] = _stats(knn.get(c.trials[1], []))
        rows.append(row)
    return rows


def _num(mean: float | None, spread: float | None) -> str:
    return "-" if mean is None else f"{mean:.1f} ± {spread:.1f}"


def render_markdown(rows: list[dict[str, Any]], title: str, notes: list[str]) -> str:
    lines = [f"# {title}", "", *notes, "",
             "| table | claim | paper (ImageNet linear %) | ours (kNN top-1 %, mean ± half-range) | verdict |",
             "|---|---|---|---|---|"]
    for r in rows:
        ours = _num(r["ours_mean"], r["ours_spread"])
        if r["kind"] == "greater":
            ours += f" vs {_num(r.get('vs_mean'), r.get('vs_spread'))}"
        if r["kind"] in ("healthy", "collapses", "measured"):
            ours += f"; collapsed: {sum(r['collapsed'])}/{len(r['collapsed'])}"
        lines.append(f"| {r['table']} | {r['claim']} | {r['paper']} | {ours} | {r['verdict']} ({r['why']}) |")
    return "\n".join(lines) + "\n"
