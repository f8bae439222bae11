"""Flow `stage-data`: stage the train and test splits of a config's dataset to S3."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import tasks
from flows.common import DEFAULT_PRESET, open_context, resolve_config, run_name
from simsiam.config import Config
from simsiam.results import Staged


@flow(name="stage-data", flow_run_name=run_name("stage"), log_prints=True)
def stage_data(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
               subset: int | None = None, splits: list[str] | None = None,
               state: str | None = None) -> dict[str, Staged]:
    """Stage `splits` (default train and test) of the configured dataset as content-addressed
    versions; a version already in the store is found, not uploaded again.

    Args:
        preset: config preset (see `simsiam presets`) or a YAML file on the worker.
        overrides: `key=value` config overrides, e.g. `data.root=/data/fmnist`.
        config: a full config instead of preset + overrides.
        subset: stage only the first N samples of each split (quick runs, tests).
        splits: which splits to stage.
        state: state dir of the embedded services (default ./.simsiam or $SIMSIAM_STATE).
    """
    ctx = open_context(resolve_config(preset, overrides, config), state, track=False)
    out = {split: tasks.stage(ctx, split, subset=subset) for split in splits or ["train", "test"]}
    rows = "\n".join(f"| {k} | `{v.uri}` | {v.samples} | {v.uploaded_objects} |" for k, v in out.items())
    create_markdown_artifact(key="simsiam-staged-data", description="staged dataset versions",
                             markdown="| split | version | samples | uploaded objects |\n|---|---|---|---|\n" + rows)
    return out
