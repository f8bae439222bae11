"""What every flow needs: the resolved config, where the services are, run names, fault injection."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prefect.runtime import flow_run, task_run

from simsiam.config import Config, load_config, override_config

DEFAULT_PRESET = "cpu-demo"


def resolve_config(preset: str, overrides: list[str] | None, config: Config | None) -> Config:
    """An explicit `config` (a form in the Prefect UI) wins; else preset + `key=value` overrides."""
    cfg = config if config is not None else load_config(preset)
    return override_config(cfg, list(overrides or []))


def store_where(cfg: Config, state: str | None) -> str:
    """endpoint/bucket of the store this config stages to (part of the staging cache key)."""
    from simsiam.jobs import open_store

    store = open_store(cfg, state)
    return f"{store.settings.endpoint_url}/{store.bucket}"


def progress() -> bool:
    return sys.stderr.isatty()


def run_name(kind: str):
    """A flow-run name that says what it does: pipeline-cpu-demo-pretrain-20261128-0212."""

    def name() -> str:
        params = flow_run.parameters or {}
        cfg = params.get("config")
        label = (cfg.get("name") if isinstance(cfg, dict) else getattr(cfg, "name", None)) or params.get("preset", "")
        mode = params.get("mode")
        parts = [kind, str(label)] + ([str(mode)] if mode else []) + [time.strftime("%Y%m%d-%H%M%S")]
        return "-".join(p for p in parts if p)

    return name


def out_dir(state: str | None, name: str) -> Path:
    from simsiam.services import state_dir

    return state_dir(state) / "runs" / name


def inject_io_fault(step: str) -> None:
    """Test hook: with SIMSIAM_INJECT_IO_FAULT naming this step, its first attempt fails like a
    dropped connection, so the task's retries are exercised against real services."""
    wanted = {s.strip() for s in os.environ.get("SIMSIAM_INJECT_IO_FAULT", "").split(",") if s.strip()}
    if step in wanted and task_run.run_count <= 1:
        raise ConnectionError(f"injected I/O fault in {step} (SIMSIAM_INJECT_IO_FAULT)")
