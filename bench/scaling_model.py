"""The scaling model of infra/README.md ("Scaling"), computed; prints JSON.

    python bench/scaling_model.py

Parameter counts come from our own models (the presets' configs). Hardware figures are cited
assumptions, each named in ASSUMED with its source; change them to model other hardware. The model:
DDP all-reduces every gradient once per step (fp32, also under AMP); a ring all-reduce moves
2 (N-1)/N x gradient bytes through each GPU's link. A step takes compute + communication when
nothing overlaps, max(compute, communication) when the all-reduce hides fully behind the backward
pass; DDP's bucketed all-reduce lands in between, so both bounds are given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simsiam.config import load_config  # noqa: E402
from simsiam.models import build_model  # noqa: E402

ASSUMED = {
    # NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README, DGX A100 80GB, AMP: 2,470 img/s on
    # 1 GPU, 16,621 on 8 (6.72x). SimSiam runs forward+backward on 2 views per image: half of that.
    "a100_simsiam_r50_img_s": 2470 / 2,
    "a100_8gpu_nvlink_measured_scaling": 16621 / 2470 / 8,
    # lightly's benchmark (cited in our data-path issue): R18 SimSiam on CIFAR-10, ~2,000 img/s on one
    # RTX A6000, kNN pass included.
    "a6000_simsiam_r18_cifar_img_s": 2000,
    # L4 (g6 instances) vs A100 80GB spec sheets: 121 vs 312 dense fp16 TFLOPS, 300 vs 2,039 GB/s
    # of memory bandwidth; ResNet training is partly bandwidth-bound: we assume 30 % of an A100.
    "l4_fraction_of_a100": 0.30,
    # Link bandwidth per GPU in GB/s: NVLink 3 (A100) as nccl-tests all-reduce bus bandwidth on
    # DGX A100 (~230 GB/s); Ethernet at line rate.
    "link_gb_s": {"nvlink": 230.0, "eth_100g": 12.5, "eth_25g": 3.125, "eth_10g": 1.25},
    # ImageNet-1k train: 1,281,167 JPEGs, ~140 GB (mean ~110 kB).
    "imagenet_images": 1_281_167, "imagenet_bytes": 140e9,
    # AWS on-demand list prices, us-west-2, USD per hour (check before budgeting).
    "usd_per_hour": {"g6.2xlarge": 0.978, "m6i.2xlarge": 0.384},
    "g6_2xlarge_network_gb_s": 1.25,  # "up to 10 Gigabit"
}


def params(preset: str) -> int:
    return sum(p.numel() for p in build_model(load_config(preset).model).parameters())


def efficiency(compute_s: float, grad_bytes: float, gpus: int, link_gb_s: float) -> dict:
    comm = 0.0 if gpus == 1 else 2 * (gpus - 1) / gpus * grad_bytes / (link_gb_s * 1e9)
    return {"comm_ms": round(1000 * comm, 1), "no_overlap": round(compute_s / (compute_s + comm), 2),
            "full_overlap": round(min(1.0, compute_s / comm) if comm else 1.0, 2)}


def main() -> None:
    a = ASSUMED
    models = {}
    for name, preset, per_gpu_batch, img_s in (("r18_cifar", "cifar10-paper", 64, a["a6000_simsiam_r18_cifar_img_s"]),
                                               ("r50", "imagenet-paper", 64, a["a100_simsiam_r50_img_s"])):
        n = params(preset)
        row = {"preset": preset, "params": n, "grad_mb_per_step": round(4 * n / 1e6, 1),
               "per_gpu_batch": per_gpu_batch}
        if img_s:
            step = per_gpu_batch / img_s
            row["gpu_step_ms"] = round(1000 * step, 1)
            row["efficiency"] = {f"{g}_gpus": {link: efficiency(step, 4 * n, g, bw) for link, bw in
                                               a["link_gb_s"].items() if link != "eth_10g"} for g in (1, 2, 8, 32)}
        models[name] = row
    l4_img_s = a["a100_simsiam_r50_img_s"] * a["l4_fraction_of_a100"]
    grad = 4 * models["r50"]["params"]
    l4_step = 64 / l4_img_s
    eight = efficiency(l4_step, grad, 8, a["g6_2xlarge_network_gb_s"])
    mid = (eight["no_overlap"] + eight["full_overlap"]) / 2
    images = 100 * a["imagenet_images"]
    one_gpu_h = images / l4_img_s / 3600
    eight_h = one_gpu_h / 8 / mid
    price = a["usd_per_hour"]
    cost = {
        "imagenet_100_epochs_images": images,
        "l4_simsiam_r50_img_s": round(l4_img_s),
        "1x_g6.2xlarge": {"hours": round(one_gpu_h, 1),
                          "usd": round(one_gpu_h * (price["g6.2xlarge"] + price["m6i.2xlarge"]))},
        "8x_g6.2xlarge_10gbe": {"efficiency_bounds": eight, "efficiency_used": round(mid, 2),
                                "hours": round(eight_h, 1),
                                "usd": round(eight_h * (8 * price["g6.2xlarge"] + price["m6i.2xlarge"]))},
    }
    mean_jpeg = a["imagenet_bytes"] / a["imagenet_images"]
    s3 = {"mean_jpeg_kb": round(mean_jpeg / 1e3),
          "a100_mb_s_per_gpu": round(a["a100_simsiam_r50_img_s"] * mean_jpeg / 1e6),
          "l4_mb_s_per_gpu": round(l4_img_s * mean_jpeg / 1e6),
          "shard_guidance": "1,000-2,000 JPEGs (110-220 MB) per shard, >= 4 shards per worker: ImageNet at "
                            "1,500 per shard is 855 shards"}
    print(json.dumps({"assumed": a, "models": models, "s3_read": s3, "cost": cost,
                      "measured_reference": {"a100_8gpu_nvlink_scaling": round(a["a100_8gpu_nvlink_measured_scaling"],
                                                                                 2)}}, indent=2))


if __name__ == "__main__":
    main()
