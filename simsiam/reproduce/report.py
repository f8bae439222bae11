"""Verdicts and the report. A verdict says only what the numbers show. Ours is each trial's linear
probe top-1 on the full test split, measured on the same images for every trial; for a claim with
`metric="loss"`, the training loss at its last step, where lower wins (its paired differences are
b's loss minus a's).

- `healthy` / `collapses`: the collapse diagnostic (z_std * sqrt(d) < 0.1 is collapsed) on every seed;
- `greater` (a beats b): the seeds are paired (seed s of a and seed s of b share the init, the data
  order and the augmentations), so the test is on the per-seed differences a_s - b_s. "holds" when
  every difference is positive and the mean difference is significant (one-sided paired t-test,
  95%); the mirror image gives "does not hold"; anything else, or one paired seed, is
  "inconclusive at this budget".
- The size, where the paper gives two accuracies and the claim is about a gap (`sized`): the paper's
  relative cut in b's error, applied to our b's error (68.1 vs 64.8 cuts 35.2% error by 9.4%; at our
  b's 18.7% that is 1.75 points). A replication's test of size: when the gap's one-sided 95% upper
  bound is below that, an effect as large as the paper's is ruled out here: "holds but smaller than
  the paper's" where the ordering passes, "smaller than the paper's" where it is not shown either way.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from typing import Any, Literal

from simsiam import metrics as M
from simsiam.reproduce.suites import Claim, TrialRun

Verdict = Literal["holds", "holds but smaller than the paper's", "smaller than the paper's",
                  "does not hold at this budget", "inconclusive at this budget", "measured", "no result"]
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
       12: 1.782, 15: 1.753, 20: 1.725, 30: 1.697, 60: 1.671}  # one-sided 95% t, by df


def t95(df: int) -> float:
    """The one-sided 95% critical t at `df`, or at the next tabulated df below it (the stricter bar)."""
    return T95[max(k for k in T95 if k <= df)] if df < 120 else 1.645


Scores = dict[str, dict[int, float]]  # trial key -> seed -> probe top-1


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None, None
    return statistics.fmean(values), (max(values) - min(values)) / 2


def paper_accuracies(claim: Claim) -> tuple[float, float] | None:
    """The paper's (a, b) top-1 where its number is "a vs b" and the claim compares probes; else None."""
    m = re.match(r"(\d+(?:\.\d+)?) vs (\d+(?:\.\d+)?)", claim.paper)
    return (float(m[1]), float(m[2])) if m and claim.kind == "greater" and claim.metric == "probe" else None


def paper_size(claim: Claim) -> tuple[float, float] | None:
    """The paper's (a, b) where its claim is about the gap's size; None for "at least as good" claims."""
    return paper_accuracies(claim) if claim.sized else None


def paper_gap_here(paper: tuple[float, float], b_top1: float) -> float:
    """The paper's gap a - b as the same relative cut in b's error, at an error of 100 - b_top1."""
    pa, pb = paper
    return (pa - pb) / (100.0 - pb) * (100.0 - b_top1)


def paired_test(a: dict[int, float], b: dict[int, float],
                paper: tuple[float, float] | None = None) -> tuple[Verdict, str]:
    """(verdict, why) for "a beats b" from the seeds both ran; `paper`: its (a, b) top-1, to test the size."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if len(diffs) < 2:
        return "inconclusive at this budget", f"{len(diffs)} paired seed(s): no spread to test the gap with"
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    t = mean / (sd / math.sqrt(len(diffs))) if sd > 0 else math.copysign(math.inf, mean) if mean else 0.0
    why = f"paired gap {mean:+.2f}; per seed {', '.join(f'{d:+.2f}' for d in diffs)}; t = {t:.2f}"
    crit = t95(len(diffs) - 1)
    smaller = False
    if paper is not None:
        upper = mean + crit * sd / math.sqrt(len(diffs))  # one-sided 95% upper confidence bound on the gap
        here = paper_gap_here(paper, statistics.fmean(b[s] for s in seeds))
        smaller = upper < here
        why += f"; 95% upper bound {upper:+.2f} {'<' if smaller else '>='} the paper's gap at our error, {here:+.2f}"
    if min(diffs) > 0 and t > crit:
        return ("holds but smaller than the paper's" if smaller else "holds"), why
    if max(diffs) < 0 and -t > crit:
        return "does not hold at this budget", why
    return ("smaller than the paper's" if smaller else "inconclusive at this budget"), why


def verdict(claim: Claim, scores: Scores, collapsed: dict[str, list[bool]]) -> tuple[Verdict, str]:
    """(verdict, why) for `claim` from per-trial-key scores by seed and collapse flags."""
    if any(not scores.get(k) for k in claim.trials):
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
    return paired_test(scores[claim.trials[0]], scores[claim.trials[1]], paper_size(claim))


FIELD = {"probe": M.PROBE, "loss": M.LOSS}  # a claim's metric -> its key in a trial's result


def _scores(per_key: dict[str, list[dict[str, Any]]], metric: str) -> Scores:
    """Trial key -> seed -> score, higher is better: the probe, or the negated loss."""
    sign = -1.0 if metric == "loss" else 1.0
    return {k: {t["seed"]: sign * t[FIELD[metric]] for t in v if _finite(t.get(FIELD[metric]))}
            for k, v in per_key.items()}


def claim_rows(claims: list[Claim], runs: list[TrialRun], alias: dict[str, str],
               results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim: the fields of reproduce.json. `results`: run name -> the trial's probe,
    final kNN, last loss and collapse ratio under their metric keys, and `collapsed`."""
    trials: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        res = results.get(run.name)
        if res is not None and _finite(res.get(M.PROBE)):
            trials.setdefault(run.key, []).append({"trial": run.name, "seed": run.seed, **res})
    per_key = {k: trials.get(alias[k], []) for k in alias}
    scores = {m: _scores(per_key, m) for m in FIELD}
    collapsed = {k: [bool(t["collapsed"]) for t in v] for k, v in per_key.items()}
    rows = []
    for c in claims:
        v, why = verdict(c, scores[c.metric], collapsed)
        first, field = per_key.get(c.trials[0], []), FIELD[c.metric]
        mean, spread = _stats([t.get(field) for t in first])
        row = {"claim": c.words, "table": c.table, "suite": c.suite, "kind": c.kind, "metric": c.metric,
               "paper": c.paper,
               "ours_mean": mean, "ours_spread": spread, "seeds": len(first),
               "knn_mean": _stats([t[M.KNN_FINAL] for t in first if _finite(t.get(M.KNN_FINAL))])[0],
               "collapsed": [bool(t["collapsed"]) for t in first] if c.kind == "greater" else
               [f for k in c.trials for f in collapsed.get(k, [])], "verdict": v, "why": why,
               "trials": [t for k in c.trials for t in per_key.get(k, [])]}
        if c.kind == "greater":
            row["vs_mean"], row["vs_spread"] = _stats([t.get(field) for t in per_key.get(c.trials[1], [])])
        rows.append(row)
    return rows


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _num(mean: float | None, spread: float | None) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {spread:.2f}"


def verdict_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(r["verdict"] for r in rows))


def render_markdown(rows: list[dict[str, Any]], title: str, notes: list[str]) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in verdict_counts(rows).items())
    lines = [f"# {title}", "", *notes, "", f"Verdicts: {counts}.", "",
             "| table | claim | paper (ImageNet linear %) | ours (linear probe %, mean ± half-range) | verdict |",
             "|---|---|---|---|---|"]
    for r in rows:
        ours = ("loss " if r.get("metric") == "loss" else "") + _num(r["ours_mean"], r["ours_spread"])
        if r["kind"] == "greater":
            ours += f" vs {_num(r.get('vs_mean'), r.get('vs_spread'))}"
        if r["kind"] in ("healthy", "collapses", "measured"):
            ours += f"; collapsed: {sum(r['collapsed'])}/{len(r['collapsed'])}"
        lines.append(f"| {r['table']} | {r['claim']} | {r['paper']} | {ours} | {r['verdict']} ({r['why']}) |")
    return "\n".join(lines) + "\n"
