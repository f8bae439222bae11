"""Flow `pipeline`: stage -> pretrain or sweep -> evaluate -> register with the champion gate,
then a markdown report artifact with links to the MLflow run and the registered version."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import DEFAULT_PRESET, open_services, resolve_config, run_name
from flows.evaluate import evaluate
from flows.pretrain import pretrain
from flows.report import run_report
from flows.stage import stage_data
from flows.sweep import sweep
from flows.tasks import register_encoder
from simsiam.config import Config
from simsiam.errors import SimSiamError
from simsiam.steps import with_staged

REPORT_KEY = "simsiam-pipeline-report"


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
    metrics = evaluate(config=cfg, checkpoint=trained.checkpoint, run_id=trained.run_id, mlflow_uri=uri,
                       state=state)
    gate = None
    if registry and trained.run_id:
        gate = register_encoder(cfg, trained.run_id, trained.checkpoint, metrics["probe/top1"], trained.collapsed,
                                uri, state, metrics["eval_set"])
    url = trained.run_url
    create_markdown_artifact(key=REPORT_KEY, markdown=run_report(cfg, staged, trained, metrics, gate, url, mode, rows),
                             description=f"SimSiam {mode} report: data, metrics, collapse verdict, registry gate")
    return {"mode": mode, "tracking_uri": uri, "experiment": cfg.tracking.experiment, "run_id": trained.run_id,
            "run_url": url, "registered": gate, "metrics": metrics, "collapsed": trained.collapsed,
            "resumed_from_step": trained.resumed_from_step, "sweep_trials": rows,
            "staged": {k: v["uri"] for k, v in staged.items()},
            "uploaded_objects": sum(v["uploaded_objects"] for v in staged.values()), "artifact": REPORT_KEY}
