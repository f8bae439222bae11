"""Flow `reproduce`: the paper's claims as one tracked grid (`simsiam.steps.reproduce`); the report
(paper number, ours over seeds, verdict per claim) is published as a markdown artifact."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import tasks
from flows.common import open_context, ray_workers, resolve_config, run_name
from simsiam.config import Config
from simsiam.results import Reproduction


@flow(name="reproduce", flow_run_name=run_name("reproduce"), log_prints=True)
def reproduce(suite: str = "collapse", preset: str = "reproduce-cpu", seeds: int = 3,
              overrides: list[str] | None = None, config: Config | None = None, out: str | None = None,
              gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_concurrent: int | None = None,
              track: bool = True, mlflow_uri: str | None = None, state: str | None = None) -> Reproduction:
    """Run a suite of the paper's claims (collapse | ablations | em | all), each trial the preset plus
    one switch, to its full budget; publish reproduce.md as the artifact `simsiam-reproduce`.

    Args:
        seeds: paired runs per trial (seed s is shared by every trial); an ordering needs 2+ for a verdict.
        gpus_per_worker: fractional GPUs per trial (e.g. 0.25: four trials share a GPU).
    """
    from simsiam.reproduce import plan_trials

    cfg = resolve_config(preset, overrides, config)
    plan_trials(cfg, suite, seeds)  # bad input fails the flow before any service starts
    ctx = open_context(cfg, state, mlflow_uri, track)
    res = tasks.reproduce(ctx, suite, seeds, out or str(Path("runs") / f"reproduce-{suite}"),
                          ray_workers(1, gpus_per_worker, cpus_per_worker, 0), max_concurrent)
    create_markdown_artifact(key="simsiam-reproduce", markdown=Path(res.report_md).read_text(),
                             description=f"SimSiam reproduction ({suite}): one row per paper claim")
    return res
