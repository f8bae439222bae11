"""Flow `pipeline`: stage -> pretrain or sweep -> evaluate -> register with the champion gate,
then a markdown report artifact with links to the MLflow run and the registered version."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.common import DEFAULT_PRESET, open_services, resolve_config, run_name
from flows.evaluate_flow import evaluate
from flows.pretrain_flow import pretrain
from flows.run_report import pipeline_log_lines, run_report
from flows.stage import stage_data
from flows.sweep_flow import sweep
from flows.tasks import register_encoder
from simsiam.config import Config
from simsiam.errors import SimSiamError
from simsiam.steps import with_staged

REPORT_KEY = "simsiam-pipeline-report"
RUN_LINK_KEY = "simsiam-mlflow-run"


def _runs_table_url(tracking_uri: str | None, experiment: str) -> str | None:
    """The experiment's runs table with the probe/kNN/collapse columns (None without a server)."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return None
    from simsiam.tracking.runs import ensure_experiment, experiment_url

    return experiment_url(tracking_uri, ensure_experiment(tracking_uri, experiment))


def _prefect_ui() -> str | None:
    """The Prefect UI of the API this flow reports to (None under the ephemeral API: it has no UI)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    return PREFECT_UI_URL.value() if PREFECT_API_URL.value() else None


@flow(name="pipeline", flow_run_name=run_name("pipeline"), log_prints=True)
def pipeline(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
             mode: Literal["pretrain", "sweep"] = "pretrain", subset: int | None = None, workers: int = 0,
             gpus_per_worker: float = 0.0, sweep_lr: list[float] | None = None, sweep_batch: list[int] | None = None,
             sweep_grid: dict[str, list] | None = None, sweep_max_concurrent: int | None = None,
             registry: bool = True, mlflow_uri: str | None = None, state: str | None = None) -> dict:
    """The whole job: stage the data, pretrain (or sweep and keep the best trial), evaluate the
    frozen encoder (kNN + linear probe on the full staged splits), register it and promote it to
    `champion` only if it is not collapsed, clears `tracking.promote_floor` and beats the champion.

    Args:
        preset: config preset or YAML file; `overrides` are `key=value` changes; `config` a full config.
        mode: `pretrain` (one run) or `sweep` (Ray Tune over `sweep_lr` x `sweep_batch` x `sweep_grid`).
        subset: stage only the first N samples of each split (quick runs).
        workers: Ray Train workers for pretraining (0 = this process), or per sweep trial (0 counts as 1);
            `gpus_per_worker` for GPUs.
        sweep_max_concurrent: trials at once (default: as many as the free CPUs/GPUs hold).
        registry: register and gate the encoder (off: evaluate only).
        mlflow_uri: tracking server (default $MLFLOW_TRACKING_URI or the embedded one).
        state: state dir of the embedded services.
    """
    cfg = resolve_config(preset, overrides, config)
    uri = open_services(cfg, state, mlflow_uri)
    staged = stage_data(config=cfg, subset=subset, state=state)
    _log(staged=staged)
    cfg = with_staged(cfg, staged["train"], staged["test"])
    rows = None
    if mode == "pretrain":
        trained = pretrain(config=cfg, workers=workers, gpus_per_worker=gpus_per_worker, mlflow_uri=uri, state=state)
    else:
        res = sweep(config=cfg, lr=sweep_lr, batch=sweep_batch, grid=sweep_grid, workers_per_trial=max(workers, 1),
                    gpus_per_worker=gpus_per_worker, max_concurrent=sweep_max_concurrent, mlflow_uri=uri, state=state)
        trained, rows = res["trained"], res["rows"]
        if trained is None:
            raise SimSiamError(f"sweep {res['name']}: no trial finished without collapse; nothing to register")
    _log(trained=trained, mode=mode)
    metrics = evaluate(config=cfg, checkpoint=trained.checkpoint, run_id=trained.run_id, mlflow_uri=uri,
                       state=state)
    _log(metrics=metrics)
    gate = None
    if registry and trained.run_id:
        gate = register_encoder(cfg, trained.run_id, trained.checkpoint, metrics["probe/top1"], trained.collapsed,
                                uri, state, metrics["eval_set"])
    _log(gate=gate, registered=True)
    runs_url, report_url = _publish(cfg, mode, staged, trained, metrics, gate, rows, uri)
    return {"mode": mode, "tracking_uri": uri, "experiment": cfg.tracking.experiment, "run_id": trained.run_id,
            "run_url": trained.run_url, "experiment_url": runs_url, "report_url": report_url,
            "registered": gate, "metrics": metrics, "collapsed": trained.collapsed,
            "resumed_from_step": trained.resumed_from_step, "sweep_trials": rows,
            "staged": {k: v["uri"] for k, v in staged.items()},
            "uploaded_objects": sum(v["uploaded_objects"] for v in staged.values()), "artifact": REPORT_KEY}


def _log(**what) -> None:
    """What a pipeline step did, as lines in the flow run's logs (the Prefect UI's Logs tab)."""
    log = get_run_logger()
    for line in pipeline_log_lines(**what):
        log.info(line)


def _publish(cfg: Config, mode: str, staged: dict, trained, metrics: dict, gate: dict | None, rows,
             uri: str | None) -> tuple[str | None, str | None]:
    """The report and MLflow-run artifacts, and where to look; returns (runs table URL, report URL)."""
    url = trained.run_url
    runs_url = _runs_table_url(uri, cfg.tracking.experiment)
    verdict = ("collapsed" if trained.collapsed else "healthy") + (f", {gate['decision']}" if gate else "")
    probe = metrics.get("probe/top1")
    report_id = create_markdown_artifact(
        key=REPORT_KEY, markdown=run_report(cfg, staged, trained, metrics, gate, url, mode, rows, runs_url),
        description=f"SimSiam {mode} report for {cfg.name}: probe top-1 "
                    f"{probe:.2f}% ({verdict}); data versions, metrics, collapse verdict, registry gate, links"
        if probe is not None else f"SimSiam {mode} report for {cfg.name}: data, metrics, collapse verdict, links")
    if url:
        create_link_artifact(url, link_text=f"MLflow run {trained.run_id}", key=RUN_LINK_KEY,
                             description=f"The MLflow run of this {mode}: metrics, figures, config, models")
    ui = _prefect_ui()
    # the V2 UI's page: a V1 path (no /v2) opens the V1 UI, whose login page shows error toasts
    report_url = f"{ui.rstrip('/')}/v2/artifacts/artifact/{report_id}" if ui else None
    _log(where={"MLflow run": url, "runs table": runs_url, "report": report_url})
    return runs_url, report_url
