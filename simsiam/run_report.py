"""What a pipeline run tells people: its markdown report, one log line per stage, and sweep trial
tables. Pure functions over the steps' results; metrics appear under their keys
(`simsiam.metrics`), rounded to 2 decimals."""

from __future__ import annotations

from simsiam import metrics as M
from simsiam.config import Config
from simsiam.redact import redact as _redact
from simsiam.results import Evaluation, Registration, Staged, TrainedRun

NO_EVAL = "no labelled evaluation data (name some with --eval or eval.dataset), so no kNN monitor and no probe"


def measured_on(evaluation: Evaluation | None) -> str:
    """What the evaluation's numbers were measured on, in words."""
    if evaluation is None:
        return f"not evaluated: {NO_EVAL}"
    free = evaluation.label_free_set.get("label_free.set")
    probe = evaluation.eval_set["eval.set"] if evaluation.eval_set else f"no probe: {NO_EVAL}"
    return f"{probe}" + (f"; label-free metrics on {free}" if free else "")


def run_report(cfg: Config, staged: dict[str, Staged], train: TrainedRun, evaluation: Evaluation | None,
               gate: Registration | None, mode: str = "pretrain", sweep_rows: list[dict] | None = None,
               runs_url: str | None = None, notes: list[str] | None = None) -> str:
    """The pipeline's markdown report: data version, config, metrics, collapse verdict, gate, links,
    and `notes` on how the run went (its orchestrator's server restarted, say).
    No inline code inside link text: Prefect's UI shows those backticks literally."""
    lines = [f"# SimSiam {mode}: `{cfg.name}`", "", *[f"**Note:** {note}\n" for note in notes or []]]
    if train.run_url:
        lines += [f"**MLflow run:** [{train.run_id}]({_redact(train.run_url)})", ""]
    if runs_url:
        lines += [f"**MLflow runs table** (probe, kNN, collapse columns): [experiment {cfg.tracking.experiment}]"
                  f"({_redact(runs_url)})", ""]
    if gate:
        lines += [f"**Registered:** [{gate.name} v{gate.version}]({_redact(gate.url or '')}) with alias "
                  f"**{gate.decision}**: load it as `{gate.alias_uri}`", f"- gate: {gate.reasons or '-'}", ""]
    lines += ["## Data", "| split | staged version | samples | shards | uploaded objects |", "|---|---|---|---|---|"]
    lines += [f"| {s.split} | `{s.uri}` | {s.samples} | {s.shards} | {s.uploaded_objects} |" for s in staged.values()]
    lines += ["", "## Result", f"{train.steps} steps, {train.epochs} epochs, {M.fmt(train.wall_s)} s of training"
              + f"; measured on: {measured_on(evaluation)}.", ""]
    lines += M.table({**train.metrics, **(evaluation.metrics if evaluation else {})})
    verdict = ("**COLLAPSED**: z/||z|| has (almost) no spread; the encoder maps images to one point and is never "
               "promoted." if train.collapsed else "healthy: no collapse (z_std x sqrt(d) well above 0).")
    lines += ["", f"**Collapse verdict:** {verdict}", ""]
    if sweep_rows:
        lines += ["## Sweep trials", format_table(sweep_rows), ""]
    lines += ["## Config", f"preset name `{cfg.name}`, config hash `{cfg.config_hash()}`", "",
              "```yaml", _redact(cfg.to_yaml()).rstrip(), "```"]
    return "\n".join(lines)


def log_lines(staged: dict[str, Staged] | None = None, trained: TrainedRun | None = None, mode: str = "pretrain",
              evaluation: Evaluation | None = None, gate: Registration | None = None, registered: bool = False,
              where: dict[str, str | None] | None = None) -> list[str]:
    """What the pipeline flow's run log says after each stage (stage, train, evaluate, register, where
    to look): one line each, so the flow run's Logs tab tells what happened."""
    lines = [f"stage {split}: {staged_line(s)}" for split, s in (staged or {}).items()]
    if trained is not None:
        start = f"resumed from step {s}" if (s := trained.resumed_from_step) else "started from scratch"
        lines.append(f"train ({mode}): MLflow run {trained.run_id}: {trained.steps} steps, {trained.epochs} epochs "
                     f"in {M.fmt(trained.wall_s)} s, {start}; " + _values(trained.metrics) + ": "
                     + ("COLLAPSED" if trained.collapsed else "healthy"))
    if evaluation is not None:
        lines.append(f"evaluate: {_values(evaluation.metrics)} (measured on: {measured_on(evaluation)})")
    if gate is not None:
        lines.append(f"register: {gate.name} v{gate.version} -> {gate.decision}"
                     + (" (already gated)" if gate.noop else "") + f"; reasons: {gate.reasons or '-'}")
    elif registered:
        lines.append("register: skipped (registry off, or no MLflow run)")
    if where:
        lines.append("where to look: " + "; ".join(f"{k} {_redact(v)}" for k, v in where.items() if v))
    return lines


def staged_line(s: Staged) -> str:
    """One line on a staging: what it holds, what it uploaded, what it kept and what it skipped."""
    how = "cache hit, 0 objects uploaded" if s.cached else f"uploaded {s.uploaded_objects} objects"
    if s.uploaded_bytes:
        how += f" ({s.uploaded_bytes / 2**20:.2f} MiB)"
    kept = f", {s.reused_shards} shard(s) kept from the version before" if s.reused_shards else ""
    skipped = f"; {s.skipped} file(s) skipped, not images: {'; '.join(s.skipped_first[:3])}" if s.skipped else ""
    return f"{s.spec}: {s.samples} {'samples' if s.labelled else 'images'} in {s.shards} shard(s); {how}{kept}{skipped}"


def _values(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {M.fmt(v)}" for k, v in metrics.items())


def trial_table(rows: list[dict]) -> list[dict]:
    """Rows for `create_table_artifact`: JSON-friendly values, metrics rounded for people."""
    return [{k: (M.fmt(v) if k in M.MEANING else v) for k, v in r.items() if k not in ("error", "pid", "checkpoint")}
            for r in rows]


def format_table(rows: list[dict]) -> str:
    """The trial rows as a markdown table (CLI output, `sweep_results.md`, the Prefect report)."""
    if not rows:
        return "(no trials)"
    keys = [k for k in rows[0] if k not in ("error", "checkpoint", "pid", "run_id")]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(k, r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _cell(key: str, value) -> str:
    """2 decimals for a metric; grid values (an lr of 1e-4) as they are."""
    return M.fmt(value) if key in M.MEANING or key in ("time_s",) else str(value)
