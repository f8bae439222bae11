"""Flow `evaluate`: label-free metrics, kNN and linear probe of a run's checkpoint or a registered encoder version."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import tasks
from flows.common import DEFAULT_PRESET, open_context, resolve_config, run_name
from simsiam import metrics as M
from simsiam.config import Config
from simsiam.results import Evaluation
from simsiam.run_report import measured_on


@flow(name="evaluate", flow_run_name=run_name("evaluate"), log_prints=True)
def evaluate(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
             checkpoint: str | None = None, model_uri: str | None = None, run_id: str | None = None,
             mlflow_uri: str | None = None, state: str | None = None) -> Evaluation:
    """Evaluate a frozen backbone on the config's data: `checkpoint` (path or s3:// URI) or
    `model_uri` (e.g. `models:/simsiam-fashion-mnist-resnet18@champion`). With `run_id`, the
    metrics are logged to that MLflow run."""
    ctx = open_context(resolve_config(preset, overrides, config), state, mlflow_uri, bool(model_uri or run_id))
    ev = tasks.evaluate(ctx, checkpoint=checkpoint, model_uri=model_uri, run_id=run_id)
    rows = "\n".join(M.table(ev.metrics))
    create_markdown_artifact(
        key="simsiam-evaluation", description="label-free metrics, kNN and linear probe of a frozen backbone",
        markdown=f"# Evaluation of `{model_uri or checkpoint}`\n\n{rows}\n\nMeasured on: {measured_on(ev)}.")
    return ev
