"""What every flow needs: its run context (the config resolved once, the services opened once) and
a run name that says what it does."""

from __future__ import annotations

import time

from prefect.runtime import flow_run

from simsiam.config import Config, load_config, override_config
from simsiam.library_env import apply_library_defaults
from simsiam.steps import RunContext

DEFAULT_PRESET = "cpu-demo"


def resolve_config(preset: str, overrides: list[str] | None, config: Config | None) -> Config:
    """An explicit `config` (a form in the Prefect UI), else the preset, with `key=value` overrides on top;
    and, a flow being an entry point, the libraries' environment."""
    apply_library_defaults()
    return override_config(config, list(overrides or [])) if config is not None else \
        load_config(preset, list(overrides or []))


def open_context(cfg: Config, state: str | None = None, mlflow_uri: str | None = None, track: bool = True,
                 context: RunContext | None = None) -> RunContext:
    """The flow's run context: the one its caller opened (`context`: the CLI hands its own over), or
    one opened here with the services it needs; in both cases carrying this flow run."""
    if context is None:
        context = RunContext.open(cfg, state, tracking=track, tracking_uri=mlflow_uri, progress=True)
    return context.in_flow_run(flow_run.id, flow_run.root_flow_run_id)


def ray_workers(workers: int, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_failures: int = 2):
    """Ray Train workers for a run, or None for this process (0 workers)."""
    if workers <= 0:
        return None
    from simsiam.ray import RayWorkers

    return RayWorkers(workers, gpus_per_worker, cpus_per_worker, max_failures)


def run_name(kind: str):
    """A flow-run name that says what it does: pipeline-cpu-demo-pretrain-20261128-0212."""

    def name() -> str:
        params = flow_run.parameters or {}
        cfg = getattr(params.get("context"), "cfg", None) or params.get("config")
        label = (cfg.get("name") if isinstance(cfg, dict) else getattr(cfg, "name", None)) or params.get("preset", "")
        mode = params.get("mode")
        parts = [kind, str(label)] + ([str(mode)] if mode else []) + [time.strftime("%Y%m%d-%H%M%S")]
        return "-".join(p for p in parts if p)

    return name
