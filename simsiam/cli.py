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


def _echo_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


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
def up(state: StateOpt = None) -> None:
    """Start the embedded services (SeaweedFS S3 on 127.0.0.1), or reuse the running ones."""
    from simsiam.services import s3_status, start_s3

    start_s3(state)
    _echo_json(s3_status(state))


@app.command()
def down(state: StateOpt = None) -> None:
    """Stop the embedded services started from the state dir."""
    from simsiam.services import stop_s3

    _echo_json({"service": "s3", "stopped": stop_s3(state)})


@app.command()
def status(state: StateOpt = None) -> None:
    """Show whether the embedded services are running, and where."""
    from simsiam.services import s3_status

    _echo_json(s3_status(state))


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


@data_app.command("ls")
def data_ls(preset: PresetOpt = "cpu-demo", set_: SetOpt = None, state: StateOpt = None) -> None:
    """List staged datasets: name, version, split, samples, shards, size."""
    from simsiam.config import load_config
    from simsiam.storage import list_datasets

    rows = list_datasets(_store(load_config(preset, set_ or []), state))
    if not rows:
        typer.echo("no staged datasets (stage one with `simsiam stage fashion-mnist`)")
        return
    typer.echo(f"{'name':<28} {'version':<18} {'split':<6} {'samples':>8} {'shards':>6} {'MB':>8}  created")
    for r in rows:
        typer.echo(f"{r['name']:<28} {r['version']:<18} {r['split']:<6} {r['samples']:>8} {r['shards']:>6} "
                   f"{r['bytes'] / 2**20:>8.1f}  {r['created_at']}")


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
) -> None:
    """Pretrain a SimSiam encoder in this process (CPU or one GPU)."""
    from simsiam.config import load_config
    from simsiam.engine import JsonlReporter, ProgressReporter, load_checkpoint, train

    config_file = out / "config.yaml"
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
    train_src, test_src = _sources(cfg, need_test=cfg.eval.knn_every_epochs > 0)
    result = train(cfg, [JsonlReporter(out / "metrics.jsonl", resume_step=step), ProgressReporter(progress)],
                   out_dir=out, resume=resume, train_source=train_src, test_source=test_src)
    _echo_json({"out": str(out), "steps": result.step, "epochs": result.epoch, "wall_s": round(result.wall_s, 1),
                "collapsed": result.collapsed, "knn/top1": result.knn_last, "knn/best_top1": result.knn_best,
                **{k: v for k, v in result.last_metrics.items()}})


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
