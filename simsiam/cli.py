"""`simsiam` command line. User errors print one line and exit 2; no tracebacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

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


def _tracking_uri(uri: str | None, state: Path | None = None) -> str:
    import os

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    from simsiam.services import start_mlflow

    return start_mlflow(state).tracking_uri


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


def _store(cfg, state: Path | None = None):
    from simsiam.storage import open_store
    from simsiam.storage.client import settings_from_env

    return open_store(settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state))


def _sources(cfg, need_test: bool):
    """Train/test ImageSources: staged versions in S3 when data.source is set, else local files."""
    from simsiam.data import load_source

    if cfg.data.source is None:
        return load_source(cfg.data, "train"), (load_source(cfg.data, "test") if need_test else None)
    from simsiam.storage import StagedSource

    store = _store(cfg)
    train_src = StagedSource(store, cfg.data.source)
    test_src = None
    if need_test:
        test_src = StagedSource(store, cfg.data.test_source) if cfg.data.test_source else load_source(cfg.data, "test")
    return train_src, test_src


@app.command()
def up(
    state: StateOpt = None,
    backend_store_uri: Annotated[Optional[str], typer.Option(help="MLflow backend store (SQLAlchemy URI) [default: sqlite in the state dir]")] = None,
) -> None:
    """Start the embedded services (SeaweedFS S3, MLflow server, both on 127.0.0.1), or reuse running ones."""
    from simsiam.services import mlflow_status, s3_status, start_mlflow

    start_mlflow(state, backend_store_uri)  # starts S3 first: MLflow keeps its artifacts there
    _echo_json({"s3": s3_status(state), "mlflow": mlflow_status(state)})


@app.command()
def down(state: StateOpt = None) -> None:
    """Stop the embedded services started from the state dir."""
    from simsiam.services import stop_mlflow, stop_s3

    _echo_json({"mlflow": {"stopped": stop_mlflow(state)}, "s3": {"stopped": stop_s3(state)}})


@app.command()
def status(state: StateOpt = None) -> None:
    """Show whether the embedded services are running, and where."""
    from simsiam.services import mlflow_status, s3_status

    _echo_json({"s3": s3_status(state), "mlflow": mlflow_status(state)})


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
    from simsiam.data import load_source
    from simsiam.storage import stage_dataset

    cfg = load_config(preset, set_ or [])
    cfg = override_config(cfg, [f"data.dataset={dataset}"] + ([f"data.root={root}"] if root else []))
    source = load_source(cfg.data, split)
    if subset is not None:
        if not hasattr(source, "subset"):
            raise SimSiamError("--subset works for in-memory datasets (fashion-mnist, cifar10)")
        source = source.subset(range(min(subset, len(source))))
    store = _store(cfg, state)
    before = store.puts
    ref, manifest = stage_dataset(source, store, name or f"{dataset}-{split}", split, cfg.storage.shard_size,
                                  source_desc=f"{dataset}:{split}" + (f":{root}" if root else ""), progress=progress)
    _echo_json({"uri": ref.uri, "manifest": ref.manifest_uri, "name": ref.name, "version": ref.version,
                "samples": manifest["num_samples"], "shards": len(manifest["shards"]),
                "bytes": manifest["total_bytes"], "uploaded_objects": store.puts - before})


@models_app.command("ls")
def models_ls(tracking_uri: TrackingUriOpt = None, state: StateOpt = None) -> None:
    """Registered encoders: versions, aliases (champion, challenger), probe/top1, gate decision."""
    from mlflow import MlflowClient

    from simsiam.tracking import check_server, list_models

    uri = _tracking_uri(tracking_uri, state)
    check_server(uri)
    _print_table(list_models(MlflowClient(uri)), [
        ("name", "<36", lambda r: r["name"]), ("version", ">7", lambda r: r["version"]),
        ("aliases", "<22", lambda r: ",".join(r["aliases"]) or "-"),
        ("probe/top1", ">10", lambda r: r["probe/top1"] or "-"), ("decision", "", lambda r: r["decision"] or "-"),
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

    uri = _tracking_uri(tracking_uri, state)
    check_server(uri)
    _echo_json(promote(MlflowClient(uri), name, version))


@data_app.command("ls")
def data_ls(preset: PresetOpt = "cpu-demo", set_: SetOpt = None, state: StateOpt = None) -> None:
    """List staged datasets: name, version, split, samples, shards, size."""
    from simsiam.config import load_config
    from simsiam.storage import list_datasets

    _print_table(list_datasets(_store(load_config(preset, set_ or []), state)), [
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
                                 tracking_uri, state))
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

        uri = _tracking_uri(tracking_uri, state)
        check_server(uri)  # before any training: a dead server is a clear error now, not after an hour
    train_src, test_src = _sources(cfg, need_test=cfg.eval.knn_every_epochs > 0 or (track and register))
    if track:
        tracker = MlflowReporter(uri, cfg.tracking.experiment, run_name=out.name, dataset=_dataset_info(cfg, train_src),
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


def _dist_settings(cfg, workers: int, gpus: float, cpus: float, max_failures: int, track: bool,
                   tracking_uri: str | None, state: Path | None):
    from simsiam.distributed import DistSettings
    from simsiam.services import state_dir
    from simsiam.storage.client import settings_from_env

    storage = settings_from_env(cfg.storage.endpoint_url, cfg.storage.bucket, cfg.storage.region, state)
    uri = None
    if track:
        from simsiam.tracking import check_server

        uri = _tracking_uri(tracking_uri, state)
        check_server(uri)
    return DistSettings(num_workers=workers, use_gpu=gpus > 0, gpus_per_worker=gpus or 1.0, cpus_per_worker=cpus,
                        storage=storage, max_failures=max_failures, tracking_uri=uri,
                        experiment=cfg.tracking.experiment, state_path=str(state_dir(state)),
                        data_endpoint=cfg.storage.endpoint_url)


def _pretrain_ray(cfg, out: Path, workers, gpus, cpus, max_failures, track, tracking_uri, state) -> dict:
    from simsiam.distributed import pretrain_distributed

    dist = _dist_settings(cfg, workers, gpus, cpus, max_failures, track, tracking_uri, state)
    res = pretrain_distributed(cfg, dist, name=out.name)
    if res.error:
        raise SimSiamError(f"distributed training failed after {max_failures} restarts: {res.error[:300]}")
    return {"out": str(out), "ray_run": res.name, "checkpoint": f"s3://{res.checkpoint_path}",
            "mlflow_run_id": res.run_id, "workers": workers, **res.metrics}


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
    dist = _dist_settings(cfg, workers_per_trial, gpus_per_worker, cpus_per_worker, 0, track, tracking_uri, state)
    res = run_sweep(cfg, space, dist, samples=samples, collapse_threshold=collapse_threshold)
    typer.echo(format_table(res.rows))
    _echo_json({"sweep": res.name, "parent_run_id": res.parent_run_id, "best": res.best})


def _dataset_info(cfg, source) -> dict:
    ref = getattr(source, "ref", None)
    if ref is not None:
        return {"name": ref.name, "version": ref.version, "uri": ref.uri, "manifest_uri": ref.manifest_uri}
    return {"name": cfg.data.dataset, "source": "local files", "samples": len(source)}


def _track_finish(cfg, tracker, result, train_src, test_src, register: bool) -> dict:
    from mlflow import MlflowClient

    from simsiam.engine import resolve_device
    from simsiam.evaluation import evaluate_backbone
    from simsiam.tracking import register_and_gate, registered_name

    out = {"mlflow_run_id": tracker.run_id,
           "mlflow_run_url": f"{tracker.tracking_uri}/#/experiments/{_experiment_id(tracker)}/runs/{tracker.run_id}"}
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


def _experiment_id(tracker) -> str:
    import mlflow

    return mlflow.get_experiment_by_name(tracker.experiment).experiment_id


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
    train_src, test_src = _sources(cfg, need_test=True)
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
