"""Markdown run reports and trial tables for Prefect artifacts (pure functions: unit-tested)."""

from __future__ import annotations

import math

from simsiam.config import Config
from simsiam.redact import redact as _redact
from simsiam.steps.results import TrainedRun


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "-" if v is None else str(v)


def run_report(cfg: Config, staged: dict, train: TrainedRun, metrics: dict | None, gate: dict | None,
               run_url: str | None, mode: str = "pretrain", sweep_rows: list[dict] | None = None,
               runs_url: str | None = None) -> str:
    """The pipeline's markdown report: data version, config, metrics, collapse verdict, gate, links.
    No inline code inside link text: Prefect's UI shows those backticks literally."""
    lines = [f"# SimSiam {mode}: `{cfg.name}`", ""]
    if run_url:
        lines += [f"**MLflow run:** [{train.run_id}]({_redact(run_url)})", ""]
    if runs_url:
        lines += [f"**MLflow runs table** (probe, kNN, collapse columns): [experiment {cfg.tracking.experiment}]"
                  f"({_redact(runs_url)})", ""]
    if gate:
        lines += [f"**Registered:** [{gate['name']} v{gate['version']}]({_redact(gate.get('url', ''))})"
                  f" with alias **{gate['decision']}**: load it as `{gate.get('alias_uri', '')}`",
                  f"- gate: {gate.get('reasons') or '-'}", ""]
    lines += ["## Data", "| split | staged version | samples | shards | uploaded objects |", "|---|---|---|---|---|"]
    for split in ("train", "test"):
        s = staged.get(split)
        if s:
            lines.append(f"| {split} | `{s['uri']}` | {s['samples']} | {s['shards']} | {s['uploaded_objects']} |")
    collapsed = train.collapsed
    ratio = train.metrics.get("train/z_std_ratio")
    lines += ["", "## Result", "| metric | value |", "|---|---|"]
    rows = [("steps", train.steps), ("epochs", train.epochs), ("train wall s", train.wall_s),
            ("final loss", train.metrics.get("train/loss")), ("z_std x sqrt(d)", ratio),
            ("kNN monitor best top-1 (%)", train.metrics.get("knn/best_top1"))]
    if metrics:
        tested = metrics.get("eval_set", {}).get("eval.test_images", "?")
        rows += [(f"kNN top-1 on {tested} test images (%)", metrics.get("knn/top1")),
                 (f"linear probe top-1 on {tested} test images (%)", metrics.get("probe/top1")),
                 ("measured on", metrics.get("eval_set", {}).get("eval.set"))]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    verdict = ("**COLLAPSED**: z/||z|| has (almost) no spread; the encoder maps images to one point and is never "
               "promoted." if collapsed else "healthy: no collapse (z_std x sqrt(d) well above 0).")
    lines += ["", f"**Collapse verdict:** {verdict}", ""]
    if sweep_rows:
        lines += ["## Sweep trials", trial_markdown(sweep_rows), ""]
    lines += ["## Config", f"preset name `{cfg.name}`, config hash `{cfg.config_hash()}`", "",
              "```yaml", _redact(cfg.to_yaml()).rstrip(), "```"]
    return "\n".join(lines)


def pipeline_log_lines(staged: dict | None = None, trained: TrainedRun | None = None, mode: str = "pretrain",
                       metrics: dict | None = None, gate: dict | None = None, registered: bool = False,
                       where: dict[str, str | None] | None = None) -> list[str]:
    """What the pipeline flow's run log says after each stage (stage, train, evaluate, register, where
    to look): one line each, so the flow run's Logs tab tells what happened without the subflows."""
    lines = []
    for split, s in (staged or {}).items():
        how = ("cache hit, 0 objects uploaded" if s.get("cached") else f"uploaded {s.get('uploaded_objects')} objects")
        lines.append(f"stage {split}: {s.get('spec') or s.get('uri')}: {s.get('samples')} samples in "
                     f"{s.get('shards')} shard(s); {how}")
    if trained is not None:
        start = (f"resumed from step {trained.resumed_from_step}" if trained.resumed_from_step
                 else "started from scratch")
        ratio = trained.metrics.get("train/z_std_ratio")
        lines.append(f"train ({mode}): MLflow run {trained.run_id}: {trained.steps} steps, {trained.epochs} epochs "
                     f"in {_fmt(trained.wall_s)} s, {start}; final loss {_fmt(trained.metrics.get('train/loss'))}, "
                     f"z_std x sqrt(d) {_fmt(ratio)}: " + ("COLLAPSED" if trained.collapsed else "healthy"))
    if metrics is not None:
        es = metrics.get("eval_set", {})
        lines.append(f"evaluate: kNN top-1 {_fmt(metrics.get('knn/top1'))}%, linear probe top-1 "
                     f"{_fmt(metrics.get('probe/top1'))}% on {es.get('eval.test_images', '?')} test images "
                     f"(eval set: {es.get('eval.set', '?')})")
    if gate is not None:
        lines.append(f"register: {gate['name']} v{gate['version']} -> {gate['decision']}"
                     + (" (already gated)" if gate.get("noop") else "") + f"; reasons: {gate.get('reasons') or '-'}")
    elif registered:
        lines.append("register: skipped (registry off, or no MLflow run)")
    if where:
        lines.append("where to look: " + "; ".join(f"{k} {_redact(v)}" for k, v in where.items() if v))
    return lines


def trial_markdown(rows: list[dict]) -> str:
    from simsiam.ray import format_table

    return format_table(rows)


def trial_table(rows: list[dict]) -> list[dict]:
    """Rows for `create_table_artifact`: JSON-friendly values only."""
    return [{k: (_fmt(v) if isinstance(v, float) else v) for k, v in r.items() if k not in ("error", "pid")}
            for r in rows]
