"""Flow `embed`: a staged dataset's embeddings under a registered model version, written to object
storage as versioned Parquet and linked from the flow run's artifact."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import tasks
from flows.common import DEFAULT_PRESET, open_context, resolve_config, run_name
from simsiam.config import Config
from simsiam.results import Embeddings


@flow(name="embed", flow_run_name=run_name("embed"), log_prints=True)
def embed(model_uri: str, data: str, preset: str = DEFAULT_PRESET, overrides: list[str] | None = None,
          config: Config | None = None, mlflow_uri: str | None = None, state: str | None = None) -> Embeddings:
    """Embed `data` (`<name>@<version>` or `<name>@latest`) with `model_uri`
    (`models:/<name>@champion` or `models:/<name>/<version>`); once per model version x data version."""
    ctx = open_context(resolve_config(preset, overrides, config), state, mlflow_uri)
    out = tasks.embed(ctx, model_uri, data)
    create_markdown_artifact(
        key="simsiam-embeddings", description="Embeddings of a staged dataset under a registered model version",
        markdown=f"# Embeddings\n\n- data: `{out.data['name']}@{out.data['version']}` ({out.data['uri']})\n"
                 f"- model: `{out.model_uri}` ({out.part})\n- rows: {out.num_rows}, dim: {out.dim}\n"
                 f"- written to: {out.uri} (Parquet: `index`, `label`, `embedding`; `manifest.json` lists parts)\n"
                 + ("- already complete: reused\n" if out.reused else ""))
    return out
