"""Where a trial's final evaluation spends its time: the backbone's features of the probe's train
sample and the full test split, the kNN, the linear probe, and the label-free metrics on their
sample (what each epoch end pays too, `eval.label_free_every_epochs`), timed apart on this machine with
the preset's settings (an untrained backbone: the cost does not depend on the weights). Prints JSON.

    python bench/eval_cost.py                            # reproduce-cpu on one thread, as in a trial
    python bench/eval_cost.py --preset cpu-demo --threads 2

A warm-up batch goes first, so the first timing does not carry the kernels' set-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from simsiam import evaluation as ev  # noqa: E402
from simsiam.config import load_config  # noqa: E402
from simsiam.data import load_source  # noqa: E402
from simsiam.label_free import LabelFreeSample  # noqa: E402
from simsiam.models import build_model  # noqa: E402
from simsiam.runtime import autocast, resolve_precision  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="reproduce-cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads [1: a one-CPU Ray trial]")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, args.set)
    train, test = load_source(cfg.data, "train"), load_source(cfg.data, "test")
    backbone, dev = build_model(cfg.model).backbone, torch.device("cpu")
    amp = resolve_precision(cfg.train.amp, cfg.train.channels_last, dev)[0]
    times, clock = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        times[name] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    with autocast(dev, amp):
        ev.features_for(backbone, cfg, test, torch.arange(cfg.eval.feature_batch_size), dev)
        lap("warmup_s")
        ftr, ytr = ev.features_for(backbone, cfg, train, ev._probe_indices(cfg, train), dev)
        lap("train_features_s")
        fte, yte = ev.features_for(backbone, cfg, test, None, dev)
        lap("test_features_s")
    ev.knn_accuracy(ftr, ytr, fte, yte, 10, cfg.eval.knn_k, cfg.eval.knn_t)
    lap("knn_s")
    ev.linear_probe(ftr, ytr, fte, yte, 10, epochs=cfg.eval.probe_epochs, batch_size=cfg.eval.probe_batch_size,
                    lr=cfg.eval.probe_lr, optimizer=cfg.eval.probe_optimizer, seed=0, device=dev)
    lap("probe_s")
    LabelFreeSample(cfg, train)(backbone, dev)  # fp32, as at an epoch end
    lap("label_free_s")
    print(json.dumps({"bench": "eval_cost", "preset": args.preset, "threads": args.threads, "amp": amp,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "train_images": len(ftr),
                      "test_images": len(fte), "feature_dim": ftr.shape[1], **times,
                      "label_free_samples": cfg.eval.label_free_samples, "label_free_pairs": cfg.eval.label_free_pairs,
                      "total_s": round(sum(v for k, v in times.items() if k != "warmup_s"), 2)}))


if __name__ == "__main__":
    main()
