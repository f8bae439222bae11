"""Flow `evaluate`: kNN + linear probe of a run's checkpoint or a registered encoder version."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import DEFAULT_PRESET, open_services, resolve_config, run_name
from flows.tasks import evaluate_encoder
from simsiam.config import Config


@flow(name="evaluate", flow_run_name=run_name("evaluate"), log_prints=True)
def evaluate(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
             checkpoint: str | None = None, model_uri: str | None = None, run_id: str | None = None,
             mlflow_uri: str | None = None, state: str | None = None) -> dict:
    """Evaluate a frozen backbone on the config's data: `checkpoint` (path or s3:// URI) or
    `model_uri` (e.g. `models:/simsiam-fashion-mnist-resnet18@champion`). With `run_id`, the
    metrics are logged to that MLflow run."""
    cfg = resolve_config(preset, overrides, config)
    uri = open_services(cfg, state, mlflow_uri, track=bool(model_uri or run_id))
    metrics = evaluate_encoder(cfg, checkpoint, model_uri, uri, run_id, state)
    create_markdown_artifact(
        key="simsiam-evaluation", description="kNN and linear probe of a frozen backbone",
        markdown=f"# Evaluation of `{model_uri or checkpoint}`\n\n| metric | value |\n|---|---|\n"
                 + "\n".join(f"| {k} | {v} |" for k, v in metrics.items()
                             if k not in ("checkpoint", "model_uri", "eval_set"))
                 + f"\n\nMeasured on: {metrics['eval_set']['eval.set']}.")
    return metrics
