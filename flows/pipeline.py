"""Flow `pipeline`: stage -> pretrain or sweep -> evaluate -> register with the champion gate,
then a markdown report artifact with links to the MLflow run and the registered version."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows import tasks
from flows.common import DEFAULT_PRESET, open_context, ray_workers, resolve_config, run_name
from simsiam import metrics as M
from simsiam.config import Config, sweep_metric_for, sweep_space
from simsiam.errors import SimSiamError
from simsiam.results import outcome
from simsiam.run_report import log_lines, run_report, trial_table
from simsiam.steps import RunContext, on_staged_data

REPORT_KEY = "simsiam-pipeline-report"
RUN_LINK_KEY = "simsiam-mlflow-run"


@flow(name="pipeline", flow_run_name=run_name("pipeline"), log_prints=True)
def pipeline(preset: str = DEFAULT_PRESET, overrides: list[str] | None = None, config: Config | None = None,
             mode: Literal["pretrain", "sweep"] = "pretrain", subset: int | None = None, workers: int = 0,
             gpus_per_worker: float = 0.0, sweep_lr: list[float] | None = None, sweep_batch: list[int] | None = None,
             sweep_grid: dict[str, list] | None = None, sweep_max_concurrent: int | None = None,
             sweep_metric: str | None = None, registry: bool = True, mlflow_uri: str | None = None,
             state: str | None = None, context: RunContext | None = None) -> dict[str, Any]:
    """The whole job: stage the data, pretrain (or sweep and keep the best trial), evaluate the frozen
    encoder (label-free metrics; with labelled data kNN + linear probe on the full staged splits),
    register it and promote it to `champion` only if it is not collapsed and beats the champion (on
    the probe, at least `tracking.promote_floor`; without labels on `eval.label_free_judge`).

    Args:
        preset: config preset or YAML file; `overrides` are `key=value` changes; `config` a full config.
        mode: `pretrain` (one run) or `sweep` (Ray Tune over `sweep_lr` x `sweep_batch` x `sweep_grid`).
        subset: stage only the first N samples of each split (quick runs).
        workers: Ray Train workers for pretraining (0 = this process), or per trial (0 counts as 1); `gpus_per_worker`.
        sweep_max_concurrent: trials at once (default: as many as the free CPUs/GPUs hold).
        sweep_metric: what ranks the trials (ASHA, best trial): a key of `simsiam.metrics.OBJECTIVES`
            (default `knn/top1` with labelled data, else `eval.label_free_judge`).
        registry: register and gate the encoder (off: evaluate only).
        mlflow_uri: tracking server (default $MLFLOW_TRACKING_URI or the embedded one).
        state: state dir of the embedded services.
        context: an entry point's open run context (`simsiam run` hands its own over); it replaces the
            config and service arguments above. Leave it empty in deployments.
    """
    cfg = context.cfg if context else resolve_config(preset, overrides, config)
    space, metric = (sweep_space(cfg, sweep_lr, sweep_batch, sweep_grid), sweep_metric_for(cfg, sweep_metric)) \
        if mode == "sweep" else (None, None)  # bad grids and metrics fail before any staging
    ctx, staged = on_staged_data(open_context(cfg, state, mlflow_uri, context=context), subset, stage=tasks.stage)
    server = _prefect_server(ctx)  # to tell, at the end, whether it restarted meanwhile
    _log(staged=staged)
    if mode == "pretrain":
        trained, rows = tasks.pretrain(ctx, workers=ray_workers(workers, gpus_per_worker)), None
    else:
        swept = tasks.sweep(ctx, space, ray_workers(max(workers, 1), gpus_per_worker),
                            max_concurrent=sweep_max_concurrent, metric=metric)
        trained, rows = swept.best, swept.rows
        if trained is None:
            raise SimSiamError(f"sweep {swept.name}: no trial finished without collapse; nothing to register")
    _log(trained=trained, mode=mode)
    evaluation = tasks.evaluate(ctx, checkpoint=trained.checkpoint, run_id=trained.run_id)
    _log(evaluation=evaluation)
    gate = tasks.register(ctx, trained, evaluation) if registry and trained.run_id else None
    _log(gate=gate, registered=True)
    where = _publish(ctx, mode, staged, trained, evaluation, gate, rows, _orchestration(server))
    return {"where_to_look": where, "run_id": trained.run_id, "registered": gate.to_dict() if gate else None,
            **outcome(trained, evaluation), "collapsed": trained.collapsed,
            "resumed_from_step": trained.resumed_from_step, "staged": {k: v.uri for k, v in staged.items()},
            "uploaded_objects": sum(v.uploaded_objects for v in staged.values()),
            **({"sweep_trials": rows} if rows else {})}


def _log(**what) -> None:
    """What a pipeline step did, as lines in the flow run's logs (the Prefect UI's Logs tab)."""
    log = get_run_logger()
    for line in log_lines(**what):
        log.info(line)


def _prefect_server(ctx: RunContext) -> int | None:
    """The embedded Prefect server's process this flow run reports to (None: another server, or none)."""
    from prefect.settings import PREFECT_API_URL

    from simsiam.services.prefect_server import embedded_server_pid

    return embedded_server_pid(ctx.state, PREFECT_API_URL.value())


def _orchestration(server: int | None) -> list[str]:
    """What the report says of the orchestrator: that the server this run started with went away
    during it (the run reached its end, so a server answered again: a restart)."""
    from simsiam.services.process import pid_alive

    if server is None or pid_alive(server):
        return []
    line = (f"The Prefect server restarted during this run (its process {server} stopped); the run went on: "
            "its Prefect client waited for the server and retried.")
    get_run_logger().warning(line)
    return [line]


def _publish(ctx: RunContext, mode: str, staged, trained, evaluation, gate, rows, notes: list[str]) -> dict[str, Any]:
    """The report and MLflow-run artifacts; returns where to look: the UIs, run, version, report."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_UI_URL

    runs_url = None
    if (ctx.tracking_uri or "").startswith(("http://", "https://")):
        from simsiam.tracking.runs import ensure_experiment, experiment_url

        runs_url = experiment_url(ctx.tracking_uri, ensure_experiment(ctx.tracking_uri, ctx.cfg.tracking.experiment))
    verdict = ("collapsed" if trained.collapsed else "healthy") + (f", {gate.decision}" if gate else "")
    judge = M.PROBE if M.PROBE in evaluation.metrics else ctx.cfg.eval.label_free_judge  # what the gate used
    report_id = create_markdown_artifact(
        key=REPORT_KEY, markdown=run_report(ctx.cfg, staged, trained, evaluation, gate, mode, rows, runs_url, notes),
        description=f"SimSiam {mode} report for {ctx.cfg.name}: {judge} {M.fmt(evaluation.metrics.get(judge))} "
                    f"({verdict}); data versions, metrics, collapse verdict, registry gate, links")
    if rows:
        create_table_artifact(key="simsiam-sweep-trials", table=trial_table(rows), description="one row per trial")
    if trained.run_url:
        create_link_artifact(trained.run_url, link_text=f"MLflow run {trained.run_id}", key=RUN_LINK_KEY,
                             description=f"The MLflow run of this {mode}: metrics, figures, config, models")
    ui = PREFECT_UI_URL.value() if PREFECT_API_URL.value() else None  # the ephemeral API has no UI
    # the V2 UI's page: a V1 path (no /v2) opens the V1 UI, whose login page shows error toasts
    report_url = f"{ui.rstrip('/')}/v2/artifacts/artifact/{report_id}" if ui else None
    _log(where={"MLflow run": trained.run_url, "runs table": runs_url, "report": report_url})
    return {"mlflow_ui": ctx.tracking_uri, "experiment": ctx.cfg.tracking.experiment, "runs_table": runs_url,
            "run": trained.run_url, "registered_model": gate and gate.name, "version": gate and gate.version,
            "alias": gate and gate.decision, "model_uri": gate and gate.alias_uri, "gate": gate and gate.reasons,
            "prefect_artifact": REPORT_KEY, "prefect_report": report_url,
            "prefect_ui": ui or f"run `simsiam up --with-prefect-server` (PREFECT_HOME={PREFECT_HOME.value()}) "
                                "to browse flow runs and artifacts"}
