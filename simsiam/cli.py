"""`simsiam` command line: parse, call a pipeline step (`simsiam.steps`), print. User errors print
one line and exit 2; a diverged training exits 1; no tracebacks for either."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from simsiam import steps
from simsiam.config import Config, load_config, override_config, sweep_metric_for, sweep_space, validate_config
from simsiam.errors import DiskFullError, SimSiamError
from simsiam.library_env import apply_library_defaults
from simsiam.metrics import fmt
from simsiam.results import outcome
from simsiam.run_report import staged_line
from simsiam.steps import RunContext

app = typer.Typer(
    help="SimSiam self-supervised pretraining (Chen & He, CVPR 2021): stage, pretrain, sweep, probe and "
         "register encoders; run the whole pipeline with `simsiam run`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Staged datasets in object storage.", no_args_is_help=True)
app.add_typer(data_app, name="data")
models_app = typer.Typer(help="Registered encoders in the MLflow model registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")

PresetOpt = Annotated[str, typer.Option("--preset", "-p", help="preset name (see `simsiam presets`) or a YAML file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config key, e.g. optim.base_lr=0.05 (repeatable)")]
StateOpt = Annotated[Optional[Path], typer.Option("--state", help="state dir of the embedded services [default: $SIMSIAM_STATE or ./.simsiam]")]
TrackingUriOpt = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow server [default: $MLFLOW_TRACKING_URI or the embedded one]")]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="train on your own images: a folder (any depth, no class folders needed) or s3://<bucket>/<prefix>/")]
EvalOpt = Annotated[Optional[str], typer.Option("--eval", help="labelled data that judges the encoder: fashion-mnist, cifar10[:DIR] or imagefolder:DIR (with train/ and test/ class folders)")]
ProgressOpt = Annotated[bool, typer.Option(help="show a progress bar")]
GpusOpt = Annotated[float, typer.Option(min=0.0, help="GPUs per Ray worker (0 = CPU workers)")]
CpusOpt = Annotated[float, typer.Option(min=0.01, help="CPUs per Ray worker")]
MetricOpt = Annotated[Optional[str], typer.Option("--metric", help="sweep: what ranks the trials (ASHA and the best one): knn/top1, label_free/rankme, label_free/alignment, label_free/uniformity, label_free/std_ratio or train/loss [default: knn/top1 with labelled data, else eval.label_free_judge (label_free/std_ratio)]")]


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


def parse_values(text: str | None, option: str, cast: Any = None) -> list | None:
    """`0.03,0.06` -> [0.03, 0.06]: YAML scalars (numbers, true/false), or `cast` applied to each."""
    import yaml

    if not text:
        return None
    try:
        return [cast(v) if cast else yaml.safe_load(v) for v in text.split(",") if v.strip()]
    except (ValueError, yaml.YAMLError):
        raise SimSiamError(f"{option} takes a comma list of values, got {text!r}") from None


def data_sets(data: str | None, evaluation: str | None) -> list[str]:
    """`--data DIR_OR_S3` and `--eval NAME[:DIR]` as config overrides."""
    sets = []
    if data:
        root = data if data.startswith("s3://") else str(Path(data).expanduser().resolve())
        sets += ["data.dataset=images", f"data.root={root}"]
    if evaluation:
        name, _, root = evaluation.partition(":")
        sets += [f"eval.dataset={name}", *([f"eval.root={Path(root).expanduser().resolve()}"] if root else [])]
    return sets


def parse_grid(axes: list[str] | None) -> dict[str, list]:
    """`--grid loss.stop_grad=true,false` (repeatable) -> {"loss.stop_grad": [True, False]}."""
    grid = {}
    for axis in axes or []:
        key, sep, values = axis.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SimSiamError(f"--grid takes key=v1,v2 (e.g. loss.stop_grad=true,false), got {axis!r}")
        grid[key.strip()] = parse_values(values, "--grid")
    return grid


# --------------------------------------------------------------------------- services


@app.command()
def up(
    state: StateOpt = None,
    backend_store_uri: Annotated[Optional[str], typer.Option(help="MLflow backend store (SQLAlchemy URI) [default: sqlite in the state dir]")] = None,
    with_prefect_server: Annotated[bool, typer.Option("--with-prefect-server", help="also start a Prefect server + a process worker (pool `local`) for scheduled deployments")] = False,
) -> None:
    """Start the embedded services (SeaweedFS S3, MLflow server, optionally Prefect; all on 127.0.0.1), or reuse running ones."""
    from simsiam.services import start_mlflow, start_prefect

    start_mlflow(state, backend_store_uri)  # starts S3 first: MLflow keeps its artifacts there
    if with_prefect_server:
        start_prefect(state)
    status(state)


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


# --------------------------------------------------------------------------- the pipeline


@app.command()
def run(
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    mode: Annotated[str, typer.Option(help="pretrain (one run) or sweep (Ray Tune over --lr x --batch)")] = "pretrain",
    subset: Annotated[Optional[int], typer.Option(min=1, help="stage only the first N samples of each split (quick try)")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Ray Train workers for pretraining (0 = this process), or per sweep trial")] = 0,
    gpus_per_worker: Annotated[float, typer.Option(min=0.0, help="GPUs per Ray worker / sweep trial worker")] = 0.0,
    lr: Annotated[Optional[str], typer.Option(help="sweep: comma list of optim.base_lr")] = None,
    batch: Annotated[Optional[str], typer.Option(help="sweep: comma list of train.batch_size")] = None,
    grid: Annotated[Optional[list[str]], typer.Option(help="sweep: extra grid axis key=v1,v2; repeatable")] = None,
    max_concurrent: Annotated[Optional[int], typer.Option(min=1, help="sweep: trials at once [default: as many as free CPUs/GPUs hold]")] = None,
    metric: MetricOpt = None,
    data: DataOpt = None,
    evaluation: EvalOpt = None,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
) -> None:
    """Run the whole pipeline (Prefect flow `pipeline`) on this machine: bring up what is missing
    (SeaweedFS S3, MLflow server, Prefect's ephemeral API or the server of `up --with-prefect-server`,
    local Ray when needed), stage the data (a second run uploads nothing), pretrain or sweep,
    evaluate (kNN + linear probe), register the encoder and gate `champion`. Prints where to look:
    MLflow UI, run, registered version and alias, Prefect artifact."""
    from simsiam.data import check_local_data
    from simsiam.services import use_local_prefect

    if mode not in ("pretrain", "sweep"):
        raise SimSiamError(f"--mode must be pretrain or sweep, got {mode!r}")
    sweep_lr, sweep_batch = parse_values(lr, "--lr", float), parse_values(batch, "--batch", int)
    cfg, sweep_grid = load_config(preset, [*data_sets(data, evaluation), *(set_ or [])]), parse_grid(grid)
    if mode == "sweep":
        sweep_space(cfg, sweep_lr, sweep_batch, sweep_grid)  # a bad axis or value: one line, now
        sweep_metric_for(cfg, metric)
    smallest = min(sweep_batch) if mode == "sweep" and sweep_batch else None
    check_local_data(cfg, subset, smallest)  # bad input fails here, before any service starts
    ctx = RunContext.open(cfg, state, tracking_uri=tracking_uri, progress=True)
    use_local_prefect(ctx.state)  # before Prefect is imported: it reads its settings from the environment

    from flows.pipeline import pipeline

    out = pipeline(context=ctx, mode=mode, subset=subset, workers=workers, gpus_per_worker=gpus_per_worker,
                   sweep_lr=sweep_lr, sweep_batch=sweep_batch, sweep_grid=sweep_grid or None,
                   sweep_max_concurrent=max_concurrent, sweep_metric=metric)
    out["where_to_look"]["stop_services"] = "simsiam down" + (f" --state {state}" if state else "")
    _echo_json(out)


# --------------------------------------------------------------------------- steps


@app.command()
def stage(
    dataset: Annotated[str, typer.Argument(help="fashion-mnist | cifar10 | imagefolder, or your own images: a folder (any depth, no labels) or s3://<bucket>/<prefix>/")],
    split: Annotated[str, typer.Option(help="train or test (a labelled dataset's)")] = "train",
    name: Annotated[Optional[str], typer.Option(help="dataset name in the store [default: DATASET-SPLIT; a folder's name; BUCKET-LAST for s3://BUCKET/.../LAST/]")] = None,
    root: Annotated[Optional[str], typer.Option(help="directory with the source files (data.root)")] = None,
    subset: Annotated[Optional[int], typer.Option(min=1, help="stage only the first N samples (files)")] = None,
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    state: StateOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Stage a dataset split, or a folder or S3 prefix of images, to S3 as a content-addressed version
    (Parquet shards + manifest.json, written last). Re-staging the same data uploads nothing, a grown
    collection uploads only what is new, an interrupted staging resumes. Files that are not images
    are skipped and counted. Prints JSON, and a summary line on stderr."""
    from simsiam.data import check_local_data, local_source
    from simsiam.storage.staging import stage_name

    images = "/" in dataset or dataset.startswith(".") or Path(dataset).is_dir()
    sets = data_sets(dataset, None) if images else [f"data.dataset={dataset}", *([f"data.root={root}"] if root else [])]
    cfg = load_config(preset, [*(set_ or []), *sets])
    stage_name(cfg, split, name)
    source = None if images else local_source(cfg, split, subset)  # bad input: an error before any service
    if images:
        check_local_data(cfg)
    out = steps.stage(RunContext.open(cfg, state, tracking=False, progress=progress), split, name, subset, source)
    typer.echo(f"staged {staged_line(out)}", err=True)
    _echo_json({k: v for k, v in out.to_dict().items() if k != "split"})


def _evaluated(ctx: RunContext, trained, summary: dict) -> None:
    """With a tracked run: the evaluation after training (label-free metrics, and kNN and probe where
    there is labelled data), registration and the gate, into `summary`."""
    evaluation = steps.evaluate(ctx, checkpoint=trained.checkpoint, run_id=trained.run_id)
    summary.update(**outcome(trained, evaluation), registry=steps.register(ctx, trained, evaluation).to_dict())


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory: config.yaml, metrics.jsonl, checkpoint.pt")],
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its checkpoint and config")] = False,
    progress: ProgressOpt = True,
    track: Annotated[bool, typer.Option("--track", help="log the run, figures and models to MLflow")] = False,
    register: Annotated[bool, typer.Option(help="with --track: probe, register the backbone and run the champion gate")] = True,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
    workers: Annotated[int, typer.Option(min=0, help="Ray Train workers (data-parallel DDP); 0 = this process")] = 0,
    gpus_per_worker: GpusOpt = 0.0,
    cpus_per_worker: CpusOpt = 1.0,
    max_failures: Annotated[int, typer.Option(help="Ray worker-group restarts from the latest checkpoint")] = 2,
) -> None:
    """Pretrain a SimSiam encoder: in this process (CPU or one GPU), or with --workers N on Ray
    (local, or the cluster at $RAY_ADDRESS) with checkpoints in S3. Re-running a Ray run with the
    same --out after its driver died resumes it."""
    ray = None
    if workers > 0:
        from simsiam.ray import RayWorkers
        from simsiam.ray.preflight import check_cluster_address

        ray = RayWorkers(workers, gpus_per_worker, cpus_per_worker, max_failures)
        check_cluster_address()  # an unreachable RAY_ADDRESS: one line, before any service starts
    cfg = steps.resume_config(out, set_) if resume and ray is None else load_config(preset, set_ or [])
    ctx = RunContext.open(cfg, state, tracking=track, tracking_uri=tracking_uri, s3=ray is not None or bool(cfg.data.source),
                progress=progress)
    trained = steps.pretrain(ctx, out=out, resume=resume, workers=ray)
    summary = {"out": str(out), **trained.to_dict()}
    if track and register:
        _evaluated(ctx, trained, summary)
    elif track:
        summary["models"] = steps.log_models(ctx, trained)[0]
    _echo_json(summary)


@app.command()
def sweep(
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    lr: Annotated[str, typer.Option(help="comma list of optim.base_lr values (lr = base x batch/256)")] = "0.03,0.06",
    batch: Annotated[str, typer.Option(help="comma list of train.batch_size values")] = "128",
    grid: Annotated[Optional[list[str]], typer.Option(help="extra grid axis key=v1,v2 (e.g. loss.stop_grad=true,false); repeatable")] = None,
    samples: Annotated[int, typer.Option(min=1, help="repeats of the whole grid")] = 1,
    workers_per_trial: Annotated[int, typer.Option(min=1, help="Ray Train workers per trial")] = 1,
    gpus_per_worker: GpusOpt = 0.0,
    cpus_per_worker: CpusOpt = 1.0,
    max_concurrent: Annotated[Optional[int], typer.Option(min=1, help="trials at once [default: as many as free CPUs/GPUs hold]")] = None,
    max_failures: Annotated[int, typer.Option(min=0, help="restarts of a failed trial, each from its own latest checkpoint")] = 2,
    collapse_threshold: Annotated[Optional[float], typer.Option(help="stop a trial once z_std*sqrt(d) falls below this [default: 0.1]")] = None,
    metric: MetricOpt = None,
    track: Annotated[bool, typer.Option("--track", help="MLflow parent run + one child run per trial")] = False,
    register: Annotated[bool, typer.Option(help="with --track: probe the best trial, register it and run the champion gate")] = True,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
) -> None:
    """Ray Tune sweep over base lr x batch (and --grid axes): ASHA on --metric (the kNN monitor knn/top1
    with labelled data, eval.label_free_judge without), collapsed trials stopped early; the best healthy trial by that
    metric wins. Prints the trial table, then JSON with every trial and the best one."""
    from simsiam.ray import RayWorkers
    from simsiam.run_report import format_table

    cfg = load_config(preset, set_ or [])
    space = sweep_space(cfg, parse_values(lr, "--lr"), parse_values(batch, "--batch"), parse_grid(grid))
    metric = sweep_metric_for(cfg, metric)
    ctx, _ = steps.on_staged_data(RunContext.open(cfg, state, tracking=track, tracking_uri=tracking_uri))  # trials read S3
    res = steps.sweep(ctx, space, RayWorkers(workers_per_trial, gpus_per_worker, cpus_per_worker, max_failures),
                      samples=samples,
                      max_concurrent=max_concurrent, collapse_threshold=collapse_threshold, metric=metric)
    typer.echo(format_table(res.rows))
    best = res.best.to_dict() if res.best else None
    summary = {"sweep": res.name, "data": ctx.cfg.data.source, "metric": res.metric, "trials": res.rows, "best": best,
               "checkpoints": res.checkpoints, "parent_run_id": res.parent_run_id, "resumed": res.resumed}
    if track and register and res.best:
        _evaluated(ctx, res.best, summary)
    _echo_json(summary)


@app.command()
def reproduce(
    suite: Annotated[str, typer.Option(help="collapse (Fig. 2, Table 1) | ablations (Tables 1c-5, output dim) | "
                                            "em (Sec. 5: k-step alternation, moving average) | all")] = "collapse",
    preset: PresetOpt = "reproduce-cpu",
    set_: SetOpt = None,
    seeds: Annotated[int, typer.Option(help="paired seeds per trial (seed s is shared by every trial); "
                                            "orderings need 2+ for a verdict")] = 3,
    out: Annotated[Optional[Path], typer.Option(help="report directory [default: runs/reproduce-<suite>]")] = None,
    workers_per_trial: Annotated[int, typer.Option(min=1, help="Ray Train workers per trial")] = 1,
    gpus_per_worker: GpusOpt = 0.0,
    cpus_per_worker: CpusOpt = 1.0,
    max_concurrent: Annotated[Optional[int], typer.Option(min=1, help="trials at once [default: as many as free CPUs/GPUs hold]")] = None,
    track: Annotated[bool, typer.Option("--track", help="MLflow parent run + one child per trial, report attached")] = False,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
) -> None:
    """Reproduce the paper's claims: every trial is the preset plus one switch, run to its full budget
    on Ray Tune; writes reproduce.md / reproduce.json (and figures/reproduce_fig2.png) with the paper's
    number, ours over seeds and a verdict per claim. Prints the table, then JSON."""
    from simsiam.ray import RayWorkers
    from simsiam.reproduce import plan_trials

    cfg = load_config(preset, set_ or [])
    plan_trials(cfg, suite, seeds)  # a bad suite or switch fails here, before any service starts
    res = steps.reproduce(RunContext.open(cfg, state, tracking=track, tracking_uri=tracking_uri), suite, seeds,
                          out or Path("runs") / f"reproduce-{suite}",
                          RayWorkers(workers_per_trial, gpus_per_worker, cpus_per_worker), max_concurrent)
    typer.echo(Path(res.report_md).read_text())
    _echo_json(res.to_dict())


@app.command()
def probe(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="checkpoint.pt (or its run directory)")],
    set_: SetOpt = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="evaluate the same architecture untrained (baseline)")] = False,
    state: StateOpt = None,
) -> None:
    """kNN and linear probe of a checkpoint's frozen backbone on the full train/test splits; prints JSON.
    The checkpoint's own config says which data; --set changes it (e.g. eval.probe_epochs=10)."""
    location, ctx = str(checkpoint), None
    if location.startswith("s3:/"):  # the checkpoint is in the store: open it before reading
        ctx = RunContext.open(Config(), state, tracking=False)
    loaded = steps.read_checkpoint(location, ctx)
    cfg = override_config(validate_config(loaded["config"]), set_ or [])
    ctx = ctx.with_config(cfg) if ctx else RunContext.open(cfg, state, tracking=False, s3=bool(cfg.data.source))
    out = steps.evaluate(ctx, checkpoint=location, random_init=random_init, loaded=loaded)
    _echo_json({"checkpoint": location, "step": out.step, "random_init": random_init, "metrics": out.metrics,
                "train_images": out.train_images, "test_images": out.test_images,
                "eval_set": out.eval_set and out.eval_set["eval.set"], "label_free_set": out.label_free_set["label_free.set"]})


@app.command()
def embed(
    model: Annotated[str, typer.Option(help="registered model: models:/<name>@champion or models:/<name>/<version>")],
    data: Annotated[str, typer.Option(help="staged dataset: <name>@<version> or <name>@latest (see `simsiam data ls`)")],
    preset: PresetOpt = "cpu-demo",
    set_: SetOpt = None,
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
) -> None:
    """Embed a staged dataset with a registered model: Parquet (index, label, embedding) in
    s3://<bucket>/embeddings/<model>/v<version>/<data>/<data version>/, manifest written last.
    Done once per model version x data version. Prints the manifest's summary as JSON."""
    ctx = RunContext.open(load_config(preset, set_ or []), state, tracking_uri=tracking_uri, progress=progress)
    out = steps.embed(ctx, model, data)
    _echo_json({k: v for k, v in out.to_dict().items() if k != "part"})


# --------------------------------------------------------------------------- inspection


@models_app.command("ls")
def models_ls(tracking_uri: TrackingUriOpt = None, state: StateOpt = None) -> None:
    """Registered encoders: versions, aliases (champion, challenger), what the gate judged each by
    (probe/top1, or the label-free judge without labels), its value and the images it was measured on,
    when the version was created, gate decision. Reads the registry only: no torch import."""
    from simsiam.tracking import list_models

    ctx = RunContext.open(Config(), state, tracking_uri=tracking_uri, s3=False)
    _print_table(list_models(ctx.mlflow), [
        ("name", "<36", lambda r: r["name"]), ("version", ">7", lambda r: r["version"]),
        ("aliases", "<22", lambda r: ",".join(r["aliases"]) or "-"),
        ("judged by", "<20", lambda r: r["criterion"] or "-"),
        ("value", ">8", lambda r: fmt(float(r["value"])) if r["value"] else "-"),
        ("created", "<16", lambda r: r["created"]), ("decision", "<10", lambda r: r["decision"] or "-"),
        ("eval set", "", lambda r: r["eval_set"] or "-"),
    ], empty="no registered models (run `simsiam pretrain --track`)")


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="version to make champion")],
    tracking_uri: TrackingUriOpt = None,
    state: StateOpt = None,
) -> None:
    """Manual override: make NAME/VERSION the champion (recorded on the version as a manual decision)."""
    from simsiam.tracking import promote

    ctx = RunContext.open(Config(), state, tracking_uri=tracking_uri, s3=False)
    _echo_json(promote(ctx.mlflow, name, version))


@data_app.command("ls")
def data_ls(preset: PresetOpt = "cpu-demo", set_: SetOpt = None, state: StateOpt = None) -> None:
    """List staged datasets (name, version, split, samples, shards, size) and embeddings."""
    from simsiam.storage import list_datasets
    from simsiam.storage.embeddings import list_embeddings

    store = RunContext.open(load_config(preset, set_ or []), state, tracking=False).store
    _print_table(list_datasets(store), [
        ("name", "<28", lambda r: r["name"]), ("version", "<18", lambda r: r["version"]),
        ("split", "<6", lambda r: r["split"]), ("samples", ">8", lambda r: r["samples"]),
        ("shards", ">6", lambda r: r["shards"]), ("MB", ">8", lambda r: f"{r['bytes'] / 2**20:.2f}"),
        ("created", "", lambda r: r["created_at"]),
    ], empty="no staged datasets (stage one with `simsiam stage fashion-mnist`)")
    typer.echo("\nembeddings")
    _print_table(list_embeddings(store), [
        ("model", "<40", lambda r: f"{r['model']}/{r['model_version']}"), ("data", "<40", lambda r: r["data"]),
        ("rows", ">8", lambda r: r["rows"]), ("dim", ">5", lambda r: r["dim"]), ("created", "", lambda r: r["created_at"]),
    ], empty="no embeddings (make some with `simsiam embed --model models:/<name>@champion --data <name>@latest`)")


@app.command()
def presets() -> None:
    """List the bundled config presets, each with what it is for (`simsiam config -p NAME` shows one in full)."""
    from simsiam.config import list_presets, preset_summary

    names = list_presets()
    width = max(map(len, names))
    for name in names:
        typer.echo(f"{name:<{width}}  {preset_summary(name)}".rstrip())


@app.command("config")
def show_config(preset: PresetOpt = "cpu-demo", set_: SetOpt = None) -> None:
    """Print the resolved config (preset + overrides) as YAML."""
    typer.echo(load_config(preset, set_ or []).to_yaml(), nl=False)


HELP_WIDTH = 120


def _widen_help() -> None:
    """Rich wraps `--help` at 80 columns when stdout is no terminal (piped to less, a CI log): the
    option table then cuts every help text into 25-column slivers. There, use 120 columns unless the
    user set COLUMNS or TERMINAL_WIDTH; a real terminal keeps its own width."""
    import typer.rich_utils

    if typer.rich_utils.MAX_WIDTH is None and "COLUMNS" not in os.environ and not sys.stdout.isatty():
        typer.rich_utils.MAX_WIDTH = HELP_WIDTH


def main() -> None:
    apply_library_defaults()
    _widen_help()
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
        if exc.errno == errno.ENOSPC:
            exc = DiskFullError(exc.filename or "a file being written")
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
