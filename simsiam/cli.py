"""`simsiam` command line. User errors print one line and exit 2; no tracebacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from simsiam import jobs
from simsiam.errors import SimSiamError

app = typer.Typer(
    help="SimSiam self-supervised pretraining (Chen & He, CVPR 2021): pretrain, probe and inspect configs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

PresetOpt = Annotated[str, typer.Option("--preset", "-p", help="preset name (see `simsiam presets`) or a YAML file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config key, e.g. optim.base_lr=0.05 (repeatable)")]


StateOpt = Annotated[Optional[Path], typer.Option("--state", help="state dir of the embedded services [default: $SIMSIAM_STATE or ./.simsiam]")]

data_app = typer.Typer(help="Staged datasets in object storage.", no_args_is_help=True)
app.add_typer(data_app, name="data")
models_app = typer.Typer(help="Registered encoders in the MLflow model registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
TrackingUriOpt = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow server [default: $MLFLOW_TRACKING_URI or the embedded one]")]


def _echo_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


def _print_table(rows: list[dict], columns: list[tuple], empty: str) -> None:
    """Plain aligned text table; columns are (header, format spec, value function)."""
    if not rows:
        typer.echo(empty)
        return
    typer.echo("  ".join(f"{h:{spec}}" for h, spec, _ in columns).rstrip())
    for r in rows:
        typer.echo("  ".join(f"{str(fn(r)):{spec}}" for _, spec, fn in columns).rstrip())


@app.command()
def up(
    state: StateOpt = None,
    backend_store_uri: Annotated[Optional[str], typer.Option(help="MLflow backend store (SQLAlchemy URI) [default: sqlite in the state dir]")] = None,
    with_prefect_server: Annotated[bool, typer.Option("--with-prefect-server", help="also start a Prefect server + a process worker (pool `local`) for scheduled deployments")] = False,
) -> None:
    """Start the embedded services (SeaweedFS S3, MLflow server, optionally Prefect; all on 127.0.0.1), or reuse running ones."""
    from simsiam.services import mlflow_status, prefect_status, s3_status, start_mlflow, start_prefect

    start_mlflow(state, backend_store_uri)  # starts S3 first: MLflow keeps its artifacts there
    if with_prefect_server:
        start_prefect(state)
    _echo_json({"s3": s3_status(state), "mlflow": mlflow_status(state), "prefect": prefect_status(state)})


@app.command()
def down(state: StateOpt = None) -> None:
    """Stop the embedded services started from the state dir (Prefect worker and server, MLflow, S3)."""
    from simsiam.services import stop_mlflow, stop_prefect, stop_s3

    _echo_json({"prefect": {"stopped": stop_prefect(state)}, "mlflow": {"stopped": stop_mlflow(state)},
                "s3": {"stopped": stop_s3(state)}})


@app.command()
def status(state: StateOpt = None) -> None:
    """Show whether the embedded services are running, and where."""
    from simsiam.services import mlflow_status, prefect_status, s3_status

    _echo_json({"s3": s3_status(state), "mlflow": mlflow_status(state), "prefect": prefect_status(state)})


@app.command()
def run(
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    mode: Annotated[str, typer.Option(help="pretrain (one run) or sweep (Ray Tune over --lr x --batch)")] = "pretrain",
    subset: Annotated[Optional[int], typer.Option(help="stage only the first N samples of each split (quick try)")] = None,
    workers: Annotated[int, typer.Option(help="Ray Train workers for pretraining (0 = this process)")] = 0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray worker / sweep trial worker")] = 0.0,
    lr: Annotated[Optional[str], typer.Option(help="sweep: comma list of optim.base_lr")] = None,
    batch: Annotated[Optional[str], typer.Option(help="sweep: comma list of train.batch_size")] = None,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
) -> None:
    """Run the whole pipeline (Prefect flow `pipeline`) on this machine: bring up what is missing
    (SeaweedFS S3, MLflow server, Prefect's ephemeral API or the server of `up --with-prefect-server`,
    local Ray when needed), stage the data (cached: a second run uploads nothing), pretrain or
    sweep, evaluate (kNN + linear probe), register the encoder and gate `champion`. Prints where
    to look: MLflow UI, run, registered version and alias, Prefect artifact."""
    import os

    from simsiam.config import load_config
    from simsiam.services import prefect_env, start_mlflow, state_dir

    if mode not in ("pretrain", "sweep"):
        raise SimSiamError(f"--mode must be pretrain or sweep, got {mode!r}")

    def values(text: str | None, cast, opt: str) -> list | None:
        try:
            return [cast(v) for v in text.split(",") if v.strip()] if text else None
        except ValueError:
            raise SimSiamError(f"{opt} takes a comma list of numbers, got {text!r}") from None

    sweep_lr, sweep_batch = values(lr, float, "--lr"), values(batch, int, "--batch")
    # Bad input fails here with one line, before any service starts: config, then the local data.
    cfg = load_config(preset, set_ or [])
    for split in ("train", "test"):
        jobs.local_source(cfg, split, subset)
    st = state_dir(state)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or start_mlflow(st).tracking_uri
    for k, v in prefect_env(st).items():
        os.environ.setdefault(k, v)  # before Prefect is imported: its settings are read from the env
    os.environ.setdefault("SIMSIAM_STATE", str(st))

    from flows.pipeline import pipeline

    out = pipeline(config=cfg, mode=mode, subset=subset, workers=workers, gpus_per_worker=gpus_per_worker,
                   sweep_lr=sweep_lr, sweep_batch=sweep_batch, mlflow_uri=uri, state=str(st))
    reg = out.get("registered") or {}
    prefect_ui = os.environ.get("PREFECT_UI_URL") or (os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None)
    where = {
        "mlflow_ui": out["tracking_uri"],
        "experiment": out["experiment"], "run": out["run_url"],
        "registered_model": reg.get("name"), "version": reg.get("version"), "alias": reg.get("decision"),
        "model_uri": reg.get("alias_uri"), "gate": reg.get("reasons"),
        "prefect_artifact": out["artifact"],
        "prefect_ui": prefect_ui or f"run `simsiam up --with-prefect-server` (PREFECT_HOME={os.environ['PREFECT_HOME']}) to browse flow runs and artifacts",
        "stop_services": "simsiam down" + (f" --state {state}" if state else ""),
    }
    _echo_json({"where_to_look": where, "metrics": {k: v for k, v in out["metrics"].items() if "/" in k},
                "collapsed": out["collapsed"], "staged": out["staged"], "uploaded_objects": out["uploaded_objects"]})


@app.command()
def stage(
    dataset: Annotated[str, typer.Argument(help="fashion-mnist | cifar10 | imagefolder")],
    split: Annotated[str, typer.Option(help="train or test")] = "train",
    name: Annotated[Optional[str], typer.Option(help="dataset name in the store [default: DATASET-SPLIT]")] = None,
    root: Annotated[Optional[str], typer.Option(help="directory with the source files (data.root)")] = None,
    subset: Annotated[Optional[int], typer.Option(help="stage only the first N samples")] = None,
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    state: StateOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Stage a dataset split to S3 as a content-addressed version (Parquet shards + manifest.json).
    Re-staging the same data uploads nothing; an interrupted staging resumes."""
    from simsiam.config import load_config, override_config

    cfg = load_config(preset, set_ or [])
    cfg = override_config(cfg, [f"data.dataset={dataset}"] + ([f"data.root={root}"] if root else []))
    out = jobs.stage(cfg, split, name, subset, state, progress)
    _echo_json({k: out[k] for k in ("uri", "manifest", "name", "version", "samples", "shards", "bytes",
                                    "uploaded_objects")})


@models_app.command("ls")
def models_ls(tracking_uri: TrackingUriOpt = None, state: StateOpt = None) -> None:
    """Registered encoders: versions, aliases (champion, challenger), probe/top1, gate decision."""
    from mlflow import MlflowClient

    from simsiam.tracking import check_server, list_models

    uri = jobs.tracking_uri(tracking_uri, state)
    check_server(uri)
    _print_table(list_models(MlflowClient(uri)), [
        ("name", "<36", lambda r: r["name"]), ("version", ">7", lambda r: r["version"]),
        ("aliases", "<22", lambda r: ",".join(r["aliases"]) or "-"),
        ("probe/top1", ">10", lambda r: f"{float(r['probe/top1']):.2f}" if r["probe/top1"] else "-"),
        ("decision", "", lambda r: r["decision"] or "-"),
    ], empty="no registered models (run `simsiam pretrain --track`)")


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="version to make champion")],
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
) -> None:
    """Manual override: make NAME/VERSION the champion (recorded on the version as a manual decision)."""
    from mlflow import MlflowClient

    from simsiam.tracking import check_server, promote

    uri = jobs.tracking_uri(tracking_uri, state)
    check_server(uri)
    _echo_json(promote(MlflowClient(uri), name, version))


@data_app.command("ls")
def data_ls(preset: PresetOpt = "cpu-demo", set_: SetOpt = None, state: StateOpt = None) -> None:
    """List staged datasets: name, version, split, samples, shards, size."""
    from simsiam.config import load_config
    from simsiam.storage import list_datasets

    _print_table(list_datasets(jobs.open_store(load_config(preset, set_ or []), state)), [
        ("name", "<28", lambda r: r["name"]), ("version", "<18", lambda r: r["version"]),
        ("split", "<6", lambda r: r["split"]), ("samples", ">8", lambda r: r["samples"]),
        ("shards", ">6", lambda r: r["shards"]), ("MB", ">8", lambda r: f"{r['bytes'] / 2**20:.1f}"),
        ("created", "", lambda r: r["created_at"]),
    ], empty="no staged datasets (stage one with `simsiam stage fashion-mnist`)")


@app.command()
def presets() -> None:
    """List the bundled config presets."""
    from simsiam.config import list_presets

    for name in list_presets():
        typer.echo(name)


@app.command("config")
def show_config(preset: PresetOpt = "cpu-demo", set_: SetOpt = None) -> None:
    """Print the resolved config (preset + overrides) as YAML."""
    from simsiam.config import load_config

    typer.echo(load_config(preset, set_ or []).to_yaml(), nl=False)


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory: config.yaml, metrics.jsonl, checkpoint.pt")],
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its checkpoint and config")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    track: Annotated[bool, typer.Option("--track", help="log the run, figures and models to MLflow")] = False,
    register: Annotated[bool, typer.Option(help="with --track: probe, register the backbone and run the champion gate")] = True,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
    workers: Annotated[int, typer.Option(help="Ray Train workers (data-parallel DDP); 0 = this process")] = 0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray worker (0 = CPU workers)")] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per Ray worker")] = 1.0,
    max_failures: Annotated[int, typer.Option(help="Ray worker-group restarts from the latest checkpoint")] = 2,
) -> None:
    """Pretrain a SimSiam encoder: in this process (CPU or one GPU), or with --workers N on Ray
    (local, or the cluster at $RAY_ADDRESS) with checkpoints in S3."""
    from simsiam.config import load_config
    from simsiam.engine import JsonlReporter, ProgressReporter, load_checkpoint, train

    config_file = out / "config.yaml"
    if workers > 0:
        if resume:
            raise SimSiamError("--resume is for in-process runs; a Ray run resumes when restarted with the same --out name")
        cfg = load_config(preset, set_ or [])
        out.mkdir(parents=True, exist_ok=True)
        config_file.write_text(cfg.to_yaml())
        _echo_json(_pretrain_ray(cfg, out, workers, gpus_per_worker, cpus_per_worker, max_failures, track,
                                 register, tracking_uri, state))
        return
    if resume:
        if not config_file.is_file():
            raise SimSiamError(f"cannot resume: {config_file} not found")
        cfg = load_config(config_file, set_ or [])
        step = load_checkpoint(out)["step"]
    else:
        cfg = load_config(preset, set_ or [])
        step = None
        out.mkdir(parents=True, exist_ok=True)
        config_file.write_text(cfg.to_yaml())
    reporters = [JsonlReporter(out / "metrics.jsonl", resume_step=step), ProgressReporter(progress)]
    tracker = None
    if track:
        from simsiam.tracking import MlflowReporter, check_server

        uri = jobs.tracking_uri(tracking_uri, state)
        check_server(uri)  # before any training: a dead server is a clear error now, not after an hour
    train_src, test_src = jobs.sources(cfg, need_test=cfg.eval.knn_every_epochs > 0 or (track and register))
    if track:
        tracker = MlflowReporter(uri, cfg.tracking.experiment, run_name=out.name, dataset=jobs.dataset_info(cfg, train_src),
                                 flush_every=cfg.tracking.flush_every_steps, system_metrics=cfg.tracking.system_metrics,
                                 unsent_path=out / "metrics-unsent.jsonl")
        reporters.append(tracker)
    try:
        result = train(cfg, reporters, out_dir=out, resume=resume, train_source=train_src, test_source=test_src)
    except BaseException:
        if tracker is not None and tracker.run_id:
            tracker.finish("FAILED")
        raise
    summary = {"out": str(out), "steps": result.step, "epochs": result.epoch, "wall_s": round(result.wall_s, 1),
               "collapsed": result.collapsed, "knn/top1": result.knn_last, "knn/best_top1": result.knn_best,
               **{k: v for k, v in result.last_metrics.items()}}
    if tracker is not None:
        summary.update(_track_finish(cfg, tracker, result, train_src, test_src, register))
    _echo_json(summary)


def _pretrain_ray(cfg, out: Path, workers, gpus, cpus, max_failures, track, register, tracking_uri, state) -> dict:

    uri = jobs.tracking_uri(tracking_uri, state) if track else None
    res = jobs.pretrain(cfg, out, uri, out.name, state, workers=workers, gpus_per_worker=gpus,
                        cpus_per_worker=cpus, max_failures=max_failures)
    summary = {"out": str(out), "mlflow_run_id": res.pop("run_id"), **res}
    if track and register:  # probe the final checkpoint, log the models to the run, gate champion
        metrics = jobs.evaluate(cfg, checkpoint=res["checkpoint"], tracking_uri=uri, run_id=summary["mlflow_run_id"],
                                state=state)
        summary.update({k: v for k, v in metrics.items() if "/" in k})
        summary["registry"] = jobs.register(cfg, summary["mlflow_run_id"], res["checkpoint"], metrics["probe/top1"],
                                            bool(res["collapsed"]), uri, state)
    return summary


@app.command()
def sweep(
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    lr: Annotated[str, typer.Option(help="comma list of optim.base_lr values (lr = base x batch/256)")] = "0.03,0.06",
    batch: Annotated[str, typer.Option(help="comma list of train.batch_size values")] = "128",
    grid: Annotated[Optional[list[str]], typer.Option(help="extra grid axis key=v1,v2 (e.g. loss.stop_grad=true,false)")] = None,
    samples: Annotated[int, typer.Option(help="repeats of the whole grid")] = 1,
    workers_per_trial: Annotated[int, typer.Option(help="Ray Train workers per trial")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per worker (0 = CPU)")] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per worker")] = 1.0,
    collapse_threshold: Annotated[float, typer.Option(help="stop a trial once z_std*sqrt(d) falls below this")] = 0.1,
    track: Annotated[bool, typer.Option("--track", help="MLflow parent run + one child run per trial")] = False,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
) -> None:
    """Ray Tune sweep over base lr x batch (and --grid axes): ASHA on knn/top1, collapsed trials
    stopped early. Prints the trial table."""
    import yaml

    from simsiam.config import load_config
    from simsiam.sweep import format_table, run_sweep

    cfg = load_config(preset, set_ or [])

    def values(text: str) -> list:
        return [yaml.safe_load(v) for v in text.split(",") if v.strip()]

    space = {"optim.base_lr": values(lr), "train.batch_size": values(batch)}
    for axis in grid or []:
        key, _, vals = axis.partition("=")
        space[key.strip()] = values(vals)
    for key, vals in space.items():
        from simsiam.config import override_config

        for v in vals:
            override_config(cfg, [f"{key}={v}"])  # reject a bad value before any trial starts
    uri = jobs.tracking_uri(tracking_uri, state) if track else None
    dist = jobs.dist_settings(cfg, workers_per_trial, gpus_per_worker, cpus_per_worker, 0, uri, state)
    res = run_sweep(cfg, space, dist, samples=samples, collapse_threshold=collapse_threshold)
    typer.echo(format_table(res.rows))
    _echo_json({"sweep": res.name, "parent_run_id": res.parent_run_id, "best": res.best})


def _track_finish(cfg, tracker, result, train_src, test_src, register: bool) -> dict:
    from mlflow import MlflowClient

    from simsiam.engine import resolve_device
    from simsiam.evaluation import evaluate_backbone
    from simsiam.tracking import register_and_gate, registered_name, run_url

    out = {"mlflow_run_id": tracker.run_id,
           "mlflow_run_url": run_url(tracker.tracking_uri, tracker.run_id)}
    if register and "backbone" in tracker.model_uris:
        metrics = evaluate_backbone(result.model.backbone, cfg, train_src, test_src, resolve_device(cfg.train.device))
        tracker.log_eval(metrics)
        gate = register_and_gate(MlflowClient(tracker.tracking_uri), tracker.run_id, tracker.model_uris["backbone"],
                                 registered_name(cfg), metrics["probe/top1"], result.collapsed,
                                 cfg.tracking.promote_floor)
        out.update(metrics)
        out["registry"] = gate
    tracker.finish()
    return out


@app.command()
def probe(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="checkpoint.pt (or its run directory)")],
    set_: SetOpt = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="evaluate the same architecture untrained (baseline)")] = False,
) -> None:
    """kNN and linear probe of a checkpoint's frozen backbone on the full train/test splits; prints JSON."""
    from simsiam.config import override_config, validate_config
    from simsiam.engine import load_checkpoint, load_weights, resolve_device, seed_everything
    from simsiam.evaluation import evaluate_backbone
    from simsiam.models import build_model

    ckpt = load_checkpoint(checkpoint)
    cfg = validate_config(ckpt["config"])
    cfg = override_config(cfg, set_ or [])
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    if not random_init:
        load_weights(model, ckpt["model"], checkpoint)
    device = resolve_device(cfg.train.device)
    model.to(device)
    train_src, test_src = jobs.sources(cfg, need_test=True)
    metrics = evaluate_backbone(model.backbone, cfg, train_src, test_src, device)
    _echo_json({"checkpoint": str(checkpoint), "step": ckpt["step"], "random_init": random_init,
                "train_images": len(train_src), "test_images": len(test_src), **metrics})


def main() -> None:
    # Typer handles usage errors itself (exit 2); our user errors get the same treatment.
    try:
        app()
    except SimSiamError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except FloatingPointError as exc:
        typer.echo(f"error: training diverged: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # unwritable --out, full disk: the user's environment, not a bug
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
