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


def _echo_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


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
    result = train(cfg, [JsonlReporter(out / "metrics.jsonl", resume_step=step), ProgressReporter(progress)],
                   out_dir=out, resume=resume)
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
    from simsiam.data import load_source
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
    train_src, test_src = load_source(cfg.data, "train"), load_source(cfg.data, "test")
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
