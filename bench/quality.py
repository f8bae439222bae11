"""Quality benchmark: pretrain a preset, then kNN (k=200, t=0.1) and a linear probe on the full
Fashion-MNIST (or the preset's) test set, beside the same architecture at random init and the
raw-pixel linear baseline. Prints JSON with the per-epoch kNN monitor curve.

    python bench/quality.py --preset cpu-demo --set train.epochs=30 --out runs/quality
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from simsiam.augment import eval_transform  # noqa: E402
from simsiam.config import load_config  # noqa: E402
from simsiam.data import load_source  # noqa: E402
from simsiam.engine import train  # noqa: E402
from simsiam.evaluation import evaluate_backbone, linear_probe  # noqa: E402
from simsiam.models import build_model  # noqa: E402
from simsiam.reporters import JsonlReporter, ProgressReporter, Reporter  # noqa: E402
from simsiam.runtime import resolve_device, seed_everything  # noqa: E402


class Curve(Reporter):
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.points: list[dict] = []

    def on_epoch(self, epoch, metrics):
        point = {"epoch": epoch, "minutes": round((time.perf_counter() - self.t0) / 60, 2)}
        keep = ("knn/top1", "train/loss", "train/z_std_ratio")
        point.update({k: round(v, 4) for k, v in metrics.items() if k in keep})
        self.points.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)


def raw_pixel_baseline(cfg, train_src, test_src, device) -> dict:
    tf = eval_transform(cfg.data.recipe, train_src.name, cfg.data.image_size, cfg.model.in_channels)
    xtr = tf(train_src.images).flatten(1) if hasattr(train_src, "images") else None
    if xtr is None:
        return {}
    xte = tf(test_src.images).flatten(1)
    out = linear_probe(xtr, train_src.labels, xte, test_src.labels, len(train_src.classes),
                       epochs=cfg.eval.probe_epochs, batch_size=cfg.eval.probe_batch_size, lr=cfg.eval.probe_lr,
                       device=device)
    return {"raw_pixels_linear/top1": out["top1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--out", default=None, help="run directory (checkpoint, metrics.jsonl)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the random-init and raw-pixel evaluations (they do not change with training choices)")
    args = ap.parse_args()
    cfg = load_config(args.preset, args.set)
    device = resolve_device(cfg.train.device)
    train_src, test_src = load_source(cfg.data, "train"), load_source(cfg.data, "test")
    curve = Curve()
    reporters: list[Reporter] = [curve, ProgressReporter()]
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        reporters.append(JsonlReporter(Path(args.out) / "metrics.jsonl"))
    t0 = time.perf_counter()
    result = train(cfg, reporters, out_dir=args.out, train_source=train_src, test_source=test_src)
    pretrain_s = time.perf_counter() - t0
    trained = evaluate_backbone(result.model.backbone, cfg, train_src, test_src, device)
    random_init = None
    if not args.no_baselines:
        seed_everything(cfg.train.seed)
        random_init = evaluate_backbone(build_model(cfg.model).to(device).backbone, cfg, train_src, test_src, device)
    print(json.dumps({
        "preset": args.preset, "overrides": args.set, "device": str(device), "steps": result.step,
        "epochs": cfg.train.epochs, "train_images": cfg.data.train_subset or len(train_src),
        "pretrain_minutes": round(pretrain_s / 60, 2), "collapsed": result.collapsed,
        "final_z_std_ratio": result.last_metrics.get("train/z_std_ratio"),
        "trained": trained, "random_init": random_init,
        **({} if args.no_baselines else raw_pixel_baseline(cfg, train_src, test_src, device)),
        "knn_curve": curve.points, "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX2 under ATEN_CPU_CAPABILITY=avx2
    }, indent=2))


if __name__ == "__main__":
    main()
