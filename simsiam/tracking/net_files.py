"""A trained network as two plain files, the registered model's payload: `weights.npz` (the
state_dict as numpy arrays, read with allow_pickle=False) and `net.json` (which part, the training
config, the input's normalisation). Nothing in them can run code when loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from simsiam.augment import NORM_STATS
from simsiam.config import Config, validate_config
from simsiam.models import build_model

PARTS = ("backbone", "encoder")  # encoder = backbone + projector


def write_net_files(model: torch.nn.Module, cfg: Config, part: str, out: Path) -> dict[str, str]:
    """{artifact name: path} of `part` of a SimSiam model, written under `out`."""
    net = part_of(model, part)
    out.mkdir(parents=True, exist_ok=True)
    weights, meta = out / f"{part}-weights.npz", out / f"{part}-net.json"
    np.savez(weights, **{k: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                         for k, v in net.state_dict().items()})
    mean, std = NORM_STATS[cfg.data.norm]
    meta.write_text(json.dumps({"part": part, "config": cfg.model_dump(mode="json"),
                                "input": {"channels": cfg.model.in_channels, "size": cfg.data.image_size,
                                          "mean": list(mean), "std": list(std), "range": [0.0, 1.0],
                                          "dtype": "float32"}}, indent=1))
    return {"weights": str(weights), "net": str(meta)}


def part_of(model: torch.nn.Module, part: str) -> torch.nn.Module:
    if part == "backbone":
        return model.backbone
    if part == "encoder":
        return torch.nn.Sequential(model.backbone, model.projector)
    raise ValueError(f"unknown model part {part!r}: expected one of {PARTS}")


def read_net_files(weights: str | Path, meta: str | Path) -> tuple[torch.nn.Module, dict]:
    """(the network in eval mode, net.json) rebuilt by our code from the two files."""
    info = json.loads(Path(meta).read_text())
    cfg = validate_config(info["config"])
    net = part_of(build_model(cfg.model), info["part"])
    with np.load(weights, allow_pickle=False) as arrays:
        net.load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files})
    return net.eval(), info
