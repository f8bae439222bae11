"""What every flow needs: the resolved config, where its data goes, and run names."""

from __future__ import annotations

import sys
import time

from prefect.runtime import flow_run

from simsiam.config import Config, load_config, override_config
from simsiam.library_env import apply_library_defaults

DEFAULT_PRESET = "cpu-demo"


def resolve_config(preset: str, overrides: list[str] | None, config: Config | None) -> Config:
    """An explicit `config` (a form in the Prefect UI) wins; else preset + `key=value` overrides.
    Every flow starts here, so this is also where a flow sets the libraries' environment."""
    apply_library_defaults()
    cfg = config if config is not None else load_config(preset)
    return override_config(cfg, list(overrides or []))


def open_services(cfg: Config, state: str | None, mlflow_uri: str | None = None, track: bool = True) -> str | None:
    """A flow is an entry point: it opens the services it needs (`simsiam.steps.open_services`: the
    embedded S3 unless the config names a store, and with `track` the tracking server) and returns
    the tracking URI its tasks log to. Subflows get that URI and open nothing new."""
    from simsiam.steps import open_services as open_

    return open_(state, tracking=track, tracking_uri=mlflow_uri, s3_endpoint_url=cfg.storage.endpoint_url).tracking_uri


def store_where(cfg: Config, state: str | None) -> str:
    """endpoint/bucket of the store this config stages to (part of the staging cache key)."""
    from simsiam.storage import store_for

    store = store_for(cfg, state)
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


def crash_flow_runs(ids: list[str], reason: str) -> None:
    """Mark flow runs that a dead process left RUNNING as Crashed (Prefect's state for runs whose
    process died), with the reason; runs already in a final state are left alone."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        for run_id in ids:
            try:
                if client.read_flow_run(run_id).state_type.value == "RUNNING":
                    client.set_flow_run_state(run_id, Crashed(message=reason), force=True)
            except Exception:  # noqa: BLE001 - a run from another Prefect API: nothing to mark here
                continue
