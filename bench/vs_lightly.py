"""Ours against lightly at equal training time, evaluated the same way. Both train the preset's net
(same backbone, same head sizes) on the same images for --minutes of wall time, alone on this
machine: ours through the engine (the preset's recipe, schedule and precision), lightly through
the loop of its SimSiam example (SimSiamTransform, its heads, NegativeCosineSimilarity, SGD at
0.06 x batch/256). Then the same kNN and linear probe on the full test split (`evaluate_backbone`).
Prints JSON: per seed and side the steps, images/s, kNN and probe, and ours minus lightly.

    .venv/bin/pip install -e '.[bench]'      # lightly, for comparisons only
    python bench/vs_lightly.py --minutes 6 --seeds 0
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python bench/vs_lightly.py --minutes 6 --seeds 0     # both sides as on an AVX2-only CPU
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from end_to_end import _lightly_model, _PilViews, bench_end_to_end, lightly_step  # noqa: E402

from simsiam.augment import NORM_STATS  # noqa: E402
from simsiam.config import load_config, override_config  # noqa: E402
from simsiam.data import load_source, subset_indices  # noqa: E402
from simsiam.engine import train  # noqa: E402
from simsiam.evaluation import evaluate_backbone  # noqa: E402
from simsiam.runtime import resolve_device, seed_everything  # noqa: E402


def train_ours(cfg, source, seconds: float) -> tuple[torch.nn.Module, dict]:
    """The engine with its lr schedule sized to the budget: steps = budget / the step time of a short
    timed run (the calibration is not counted)."""
    calibration = bench_end_to_end(cfg, source, steps=8, warmup=3)
    step_s = calibration["step_ms"] / 1000
    steps = max(1, int(seconds / step_s))
    per_epoch = max(1, (cfg.data.train_subset or len(source)) // cfg.train.batch_size)
    run = override_config(cfg, [f"train.max_steps={steps}", f"train.epochs={math.ceil(steps / per_epoch)}",
                                "eval.knn_every_epochs=0"])
    t0 = time.perf_counter()
    result = train(run, train_source=source)
    train_s = time.perf_counter() - t0
    return result.model.backbone, {"steps": result.step, "train_s": round(train_s, 1),
                                   "img_per_s": round(result.step * cfg.train.batch_size / train_s, 1),
                                   "amp": calibration["amp"]}


def train_lightly(cfg, source, seconds: float, workers: int) -> tuple[torch.nn.Module, dict]:
    """lightly's SimSiam example loop, run until the budget is spent (its lr is constant: no schedule
    to size). Its transform gets the image size and the dataset's normalisation, nothing else."""
    from lightly.loss import NegativeCosineSimilarity
    from lightly.transforms import SimSiamTransform

    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    model = _lightly_model(cfg, device)
    grey = cfg.model.in_channels == 1
    mean, std = NORM_STATS[source.name]  # the statistics our eval transform normalises with
    transform = SimSiamTransform(input_size=cfg.data.image_size, cj_sat=0.0 if grey else 0.4,
                                 cj_hue=0.0 if grey else 0.1, random_gray_scale=0.0 if grey else 0.2,
                                 gaussian_blur=0.0, normalize={"mean": list(mean), "std": list(std)})
    index = subset_indices(len(source), cfg.data.train_subset, cfg.train.seed)
    loader = torch.utils.data.DataLoader(_PilViews(source, index, transform, grey), batch_size=cfg.train.batch_size,
                                         shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    criterion = NegativeCosineSimilarity()
    opt = torch.optim.SGD(model.parameters(), lr=0.06 * cfg.train.batch_size / 256, momentum=0.9, weight_decay=5e-4)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for (x0, x1), _ in loader:
            lightly_step(model, criterion, opt, x0.to(device), x1.to(device))
            steps += 1
            if time.perf_counter() - t0 >= seconds:
                break
    train_s = time.perf_counter() - t0
    return model.backbone, {"steps": steps, "train_s": round(train_s, 1),
                            "img_per_s": round(steps * cfg.train.batch_size / train_s, 1), "amp": "none",
                            "loader_workers": workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--minutes", type=float, default=6.0, help="training wall time for each side")
    ap.add_argument("--seeds", default="0", help="comma-separated train.seed values")
    ap.add_argument("--lightly-workers", type=int, default=2, help="DataLoader workers for lightly's PIL transform")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (both sides)")
    args = ap.parse_args()
    try:
        import lightly
    except ImportError as exc:
        sys.exit(f"error: lightly is not installed ({exc}): .venv/bin/pip install -e '.[bench]'")
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = load_config(args.preset, [*args.set, f"train.seed={seed}"])
        train_src, test_src = load_source(cfg.data, "train"), load_source(cfg.data, "test")
        device = resolve_device(cfg.train.device)
        row = {"seed": seed}
        for side, fit in (("ours", lambda: train_ours(cfg, train_src, args.minutes * 60)),
                          ("lightly", lambda: train_lightly(cfg, train_src, args.minutes * 60, args.lightly_workers))):
            backbone, info = fit()
            scores = evaluate_backbone(backbone, cfg, train_src, test_src, device)
            row[side] = {**info, "knn": round(scores["knn/final_top1"], 2), "probe": round(scores["probe/top1"], 2)}
            print(json.dumps({side: row[side], "seed": seed}), file=sys.stderr, flush=True)
        row["ours_minus_lightly"] = {k: round(row["ours"][k] - row["lightly"][k], 2) for k in ("knn", "probe")}
        runs.append(row)
    gaps = [r["ours_minus_lightly"] for r in runs]
    print(json.dumps({"bench": "vs_lightly", "preset": args.preset, "minutes": args.minutes, "overrides": args.set,
                      "lightly": lightly.__version__, "torch_threads": torch.get_num_threads(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "runs": runs,
                      "mean_gap": {k: round(sum(g[k] for g in gaps) / len(gaps), 2) for k in ("knn", "probe")}},
                     indent=2))


if __name__ == "__main__":
    main()
