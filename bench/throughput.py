"""Images/s of the SimSiam train step, of augmentation, and end to end; prints JSON.

    python bench/throughput.py --preset cpu-demo --batch 128 --steps 20
    python bench/throughput.py --preset cpu-demo --variants base,channels_last,bf16,compile
    python bench/throughput.py --shape lightly --end-to-end --lightly   # the issue-12 comparison

`train_img_per_s` counts source images per second through one full step (two augmented views,
forward + backward + SGD) on a fixed pre-augmented batch. `augment_img_per_s` counts images per
second through the two-view per-sample transform in this process, `augment_device_img_per_s` the
same through the batched device path. `end_to_end` runs the real engine loop (data, augmentation,
step) for `data.augment_on=workers` and `device`; `lightly` runs lightly's own SimSiam recipe
(its transform in DataLoader workers, its heads and loss) on the same shape and backbone, when the
bench extra is installed (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from simsiam.augment import MultiView, train_transform  # noqa: E402
from simsiam.config import load_config  # noqa: E402
from simsiam.data import ViewsDataset, load_source, subset_indices  # noqa: E402
from simsiam.losses import simsiam_loss  # noqa: E402
from simsiam.models import build_model  # noqa: E402
from simsiam.optim import build_optimizer  # noqa: E402
from simsiam.runtime import autocast, resolve_device, resolve_precision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import (  # noqa: E402
    LIGHTLY_SHAPE,
    bench_augment_device,
    bench_augment_kornia,
    bench_end_to_end,
    bench_lightly,
)

VARIANTS = {
    "base": [],
    "channels_last": ["train.channels_last=true"],
    "bf16": ["train.amp=bf16"],
    "compile": ["train.compile=true"],
    "channels_last+bf16": ["train.channels_last=true", "train.amp=bf16"],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_tf(cfg, source):
    return train_transform(cfg.data.recipe, source.name, cfg.data.image_size, cfg.model.in_channels,
                           cfg.data.crop_min_scale)


def bench_augment(cfg, source, n: int) -> float:
    tf = _train_tf(cfg, source)
    ds = ViewsDataset(source, MultiView(tf, 2), subset_indices(len(source), n, 0))
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return len(ds) / (time.perf_counter() - t0)


def bench_train(cfg, source, steps: int, warmup: int) -> dict:
    device = resolve_device(cfg.train.device)
    amp, channels_last = resolve_precision(cfg.train.amp, cfg.train.channels_last, device)
    batch = cfg.train.batch_size
    tf = _train_tf(cfg, source)
    ds = ViewsDataset(source, MultiView(tf, 2), subset_indices(len(source), batch, 0))
    views = [ds[i][0] for i in range(batch)]
    mf = torch.channels_last if channels_last else torch.contiguous_format
    x1 = torch.stack([v[0] for v in views]).to(device, memory_format=mf)
    x2 = torch.stack([v[1] for v in views]).to(device, memory_format=mf)
    model = build_model(cfg.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = build_optimizer(model, cfg.optim, batch, steps + warmup, steps + warmup)
    if cfg.train.compile:
        model.compile()

    def step():
        with autocast(device, amp):
            p1, p2, z1, z2 = model(x1, x2)
            loss = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    out = {"train_img_per_s": round(batch * steps / dt, 1), "step_ms": round(1000 * dt / steps, 1),
           "warmup_s": round(warm_s, 2)}
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _rounded(value):
    return round(value, 1) if isinstance(value, float) else value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    ap.add_argument("--augment-samples", type=int, default=2000)
    ap.add_argument("--variants", default="base", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--shape", choices=["preset", "lightly"], default="preset",
                    help="lightly: thin R18-CIFAR width 16, 32 px RGB, 3-layer 2048 projector, 512 predictor "
                         "bottleneck, batch 256 (on top of --preset)")
    ap.add_argument("--end-to-end", action="store_true", help="also time the engine loop, workers vs device")
    ap.add_argument("--lightly", action="store_true", help="also time lightly's SimSiam on the same shape")
    args = ap.parse_args()
    shape = LIGHTLY_SHAPE if args.shape == "lightly" else []
    base = shape + list(args.set) + ([f"train.batch_size={args.batch}"] if args.batch else [])
    cfg = load_config(args.preset, base)
    source = load_source(cfg.data, "train")
    result = {"preset": args.preset, "batch": cfg.train.batch_size, "backbone": cfg.model.backbone,
              "width": cfg.model.width, "image_size": cfg.data.image_size,
              "device": str(resolve_device(cfg.train.device)),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "augment_img_per_s": round(bench_augment(cfg, source, args.augment_samples), 1),
              "augment_device_img_per_s": round(bench_augment_device(cfg, source, args.augment_samples), 1),
              "augment_kornia_img_per_s": _rounded(bench_augment_kornia(cfg, source, args.augment_samples)),
              "variants": {}}
    for name in args.variants.split(","):
        vcfg = load_config(args.preset, base + VARIANTS[name])
        try:
            result["variants"][name] = bench_train(vcfg, source, args.steps, args.warmup)
        except Exception as exc:  # noqa: BLE001 - a variant unsupported here is a result, not a crash
            result["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    first = next(iter(result["variants"].values()))
    result["train_img_per_s"] = first.get("train_img_per_s")
    if args.end_to_end:
        result["end_to_end"] = {on: bench_end_to_end(load_config(args.preset, base + [f"data.augment_on={on}"]),
                                                     source, args.steps, args.warmup)
                                for on in ("workers", "device")}
    if args.lightly:
        result["lightly"] = bench_lightly(cfg, source, args.steps, args.warmup)
        ours, theirs = result.get("end_to_end", {}).get("device", {}), result["lightly"]
        if "img_per_s" in ours and "img_per_s" in theirs:
            result["device_vs_lightly"] = round(ours["img_per_s"] / theirs["img_per_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
