"""Flow `stage_data`: stage the train and test splits of a config's dataset to S3 (cached)."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import DEFAULT_PRESET, open_services, progress, resolve_config, run_name, store_where
from flows.tasks import check_staged, source_version, stage_split
from simsiam.config import Config


@flow(name="stage-data", flow_run_name=run_name("stage"), log_prints=True)
def stage_data(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
               subset: int | None = None, splits: list[str] | None = None, state: str | None = None) -> dict:
    """Stage `splits` (default train and test) of the configured dataset as content-addressed
    versions; a version already in the store is a cache hit and uploads nothing.

    Args:
        preset: config preset (see `simsiam presets`) or a YAML file on the worker.
        overrides: `key=value` config overrides, e.g. `data.root=/data/fmnist`.
        config: a full config instead of preset + overrides.
        subset: stage only the first N samples of each split (quick runs, tests).
        splits: which splits to stage.
        state: state dir of the embedded services (default ./.simsiam or $SIMSIAM_STATE).
    """
    cfg = resolve_config(preset, overrides, config)
    open_services(cfg, state, track=False)
    where = store_where(cfg, state)
    out = {}
    for split in splits or ["train", "test"]:
        version = source_version(cfg, split, subset)
        st = stage_split(cfg, split, subset, version, where, state=state, progress=progress(), return_state=True)
        staged = {**st.result(), "cached": st.name == "Cached"}
        if staged["cached"]:
            staged["uploaded_objects"] = 0  # the cached value is the first staging's count
            if not check_staged(cfg, staged, split, state):  # cached result, data gone: stage again
                staged = {**stage_split.with_options(refresh_cache=True)(cfg, split, subset, version, where,
                                                                          state=state), "cached": False}
        out[split] = staged
    rows = "\n".join(f"| {k} | `{v['uri']}` | {v['samples']} | {v['uploaded_objects']} |" for k, v in out.items())
    create_markdown_artifact(key="simsiam-staged-data", description="staged dataset versions",
                             markdown="| split | version | samples | uploaded objects |\n|---|---|---|---|\n" + rows)
    return out
