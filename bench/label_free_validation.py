"""Do the label-free metrics rank encoders as the linear probe does? Trains the encoders the project
already trains with labels at hand, measures each one's probe and its label-free metrics
(simsiam.label_free), and prints JSON: Spearman's rho per metric (all encoders, healthy ones, per
group), and per group whether picking by RankMe picks the encoder the probe would have picked.

Groups: the reproduce suite's trials (`reproduce-cpu`, every switch, seed 0); a sweep of
optim.base_lr x train.batch_size on the same preset; checkpoints along one `cpu-demo` run (step 0
is the random init). Each probe is fit on the same 20,000 training images (30 epochs) and tested on
the full test split. Rows are kept in OUT/rows.jsonl as they finish; a rerun skips finished rows.

    python bench/label_free_validation.py --out runs/label-free [--quick] [--figure docs/screenshots/x.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from simsiam import metrics as M  # noqa: E402
from simsiam.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from simsiam.config import load_config, override_config  # noqa: E402
from simsiam.data import load_source  # noqa: E402
from simsiam.diagnostics import is_collapsed  # noqa: E402
from simsiam.engine import train  # noqa: E402
from simsiam.evaluation import evaluate_backbone  # noqa: E402
from simsiam.label_free import LabelFreeSample  # noqa: E402
from simsiam.models import build_model  # noqa: E402
from simsiam.reporters import Reporter  # noqa: E402
from simsiam.reproduce.suites import plan_trials  # noqa: E402
from simsiam.runtime import seed_everything  # noqa: E402

EVAL = ["eval.probe_train_samples=20000", "eval.probe_epochs=30", "eval.knn_every_epochs=0",
        "train.device=cpu", "tracking.system_metrics=false"]
LRS, BATCHES = (0.03, 0.1, 0.3, 1.0, 3.0), (64, 256)
CHECKPOINT_STEPS = (0, 10, 25, 50, 100, 200, 375, 550, 750)


class KeepCheckpoints(Reporter):
    """Copies the run's checkpoint at the chosen steps."""

    def __init__(self, steps: set[int], into: Path) -> None:
        self.steps, self.into = steps, into

    def on_checkpoint(self, path, step: int) -> None:
        if path is not None and step in self.steps:
            shutil.copy(path, self.into / f"step-{step}.pt")


def encoders(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(group, name, overrides of the group's preset) of every encoder to train."""
    cfg = load_config("reproduce-cpu")
    _, runs, _ = plan_trials(cfg, "all", 1)
    trials = [("reproduce", r.key, list(r.overrides)) for r in runs]
    sweep = [("sweep", f"lr{lr}-b{b}", [f"optim.base_lr={lr}", f"train.batch_size={b}"])
             for lr in LRS for b in BATCHES]
    return (trials[:4] + sweep[:2]) if quick else trials + sweep


def measure(cfg, backbone, train_src, test_src) -> dict:
    t0 = time.perf_counter()
    free, _ = LabelFreeSample(cfg, train_src)(backbone)
    free_s = time.perf_counter() - t0
    out = evaluate_backbone(backbone, cfg, train_src, test_src)
    return {**free, M.PROBE: out[M.PROBE], M.KNN_FINAL: out[M.KNN_FINAL], "label_free_s": round(free_s, 2)}


def train_one(preset: str, overrides: list[str], work: Path, keep: Reporter | None = None):
    cfg = override_config(load_config(preset), [*EVAL, *overrides])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    res = train(cfg, [keep] if keep else [], out_dir=work)
    return cfg, res, time.perf_counter() - t0


def run(out: Path, quick: bool) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["group"], r["name"]) for r in rows}
    sources = {}

    def data(cfg):
        key = cfg.data.dataset
        if key not in sources:
            sources[key] = load_source(cfg.data, "train"), load_source(cfg.data, "test")
        return sources[key]

    def add(row):
        rows.append(row)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)

    for group, name, overrides in encoders(quick):
        if (group, name) in done:
            continue
        try:
            cfg, res, wall = train_one("reproduce-cpu", overrides, out / "work")
        except FloatingPointError as exc:  # diverged: no encoder to measure
            print(json.dumps({"group": group, "name": name, "diverged": str(exc)}), file=sys.stderr, flush=True)
            continue
        ratio = res.last_metrics.get(M.Z_STD_RATIO)
        add({"group": group, "name": name, "steps": res.step, "train_s": round(wall, 1),
             M.Z_STD_RATIO: ratio, "collapsed": bool(ratio is not None and is_collapsed(ratio)),
             **measure(cfg, res.model.backbone, *data(cfg))})
    steps = CHECKPOINT_STEPS[:4] if quick else CHECKPOINT_STEPS
    if not all(("checkpoints", f"step-{s}") in done for s in steps):
        ckpts = out / "checkpoints"
        ckpts.mkdir(exist_ok=True)
        demo = ["train.checkpoint_every_steps=5"] + (["train.max_steps=50"] if quick else [])
        cfg, res, _ = train_one("cpu-demo", demo, out / "work", KeepCheckpoints(set(steps), ckpts))
        for s in steps:
            if ("checkpoints", f"step-{s}") in done:
                continue
            if s == 0:
                seed_everything(cfg.train.seed)  # the engine's own init: the same weights as its step 0
                backbone, ratio = build_model(cfg.model).backbone, None
            else:
                path = ckpts / f"step-{s}.pt"
                ckpt = load_checkpoint(path)
                backbone, ratio = model_from_checkpoint(ckpt, path)[0].backbone, ckpt["metrics"].get(M.Z_STD_RATIO)
            add({"group": "checkpoints", "name": f"step-{s}", "steps": s, M.Z_STD_RATIO: ratio,
                 "collapsed": bool(ratio is not None and is_collapsed(ratio)),
                 **measure(cfg, backbone, *data(cfg))})
    return rows


def spearman(rows: list[dict], key: str) -> float | None:
    from scipy.stats import spearmanr

    pts = [(r[key], r[M.PROBE]) for r in rows if r.get(key) is not None]
    if len(pts) < 3:
        return None
    rho = spearmanr(*zip(*pts)).statistic
    return None if rho != rho else round(float(rho), 3)


def picks(rows: list[dict]) -> dict:
    """Within a group's healthy encoders: the probe's pick, each metric's pick and its probe."""
    ok = [r for r in rows if not r["collapsed"]]
    if not ok:
        return {}
    best = max(ok, key=lambda r: r[M.PROBE])
    out = {"probe_pick": best["name"], "probe_best": round(best[M.PROBE], 2)}
    for key, mode in ((M.RANKME, "max"), (M.ALIGNMENT, "min"), (M.UNIFORMITY, "min"), (M.FEATURE_STD_RATIO, "max")):
        pick = (max if mode == "max" else min)(ok, key=lambda r: r[key])
        out[key] = {"pick": pick["name"], "probe": round(pick[M.PROBE], 2),
                    "regret": round(best[M.PROBE] - pick[M.PROBE], 2), "same": pick is best}
    return out


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (M.RANKME, M.ALIGNMENT, M.UNIFORMITY, M.FEATURE_STD_RATIO)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8))
    marks = {"reproduce": "o", "sweep": "s", "checkpoints": "^"}
    for ax, key in zip(axes, keys):
        for group, mark in marks.items():
            pts = [(r[key], r[M.PROBE], r["collapsed"]) for r in rows if r["group"] == group]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=mark, label=group,
                           c=["tab:red" if p[2] else "tab:blue" for p in pts], alpha=0.75)
        ax.set_xlabel(key)
        ax.set_title(f"Spearman rho {spearman(rows, key)} (n={len(rows)})", fontsize=9)
    axes[0].set_ylabel(f"{M.PROBE} (%)")
    axes[0].legend(fontsize=8, title="red: collapsed", title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def summary(rows: list[dict]) -> dict:
    keys = (M.RANKME, M.ALIGNMENT, M.UNIFORMITY, M.FEATURE_STD_RATIO, M.KNN_FINAL)
    healthy = [r for r in rows if not r["collapsed"]]
    groups = sorted({r["group"] for r in rows})
    return {
        "encoders": len(rows), "healthy": len(healthy),
        "spearman_all": {k: spearman(rows, k) for k in keys},
        "spearman_healthy": {k: spearman(healthy, k) for k in keys},
        "spearman_by_group": {g: {"n": sum(r["group"] == g for r in rows),
                                  **{k: spearman([r for r in rows if r["group"] == g], k) for k in keys}}
                              for g in groups},
        "selection": {g: picks([r for r in rows if r["group"] == g]) for g in groups},
        "label_free_s_mean": round(sum(r["label_free_s"] for r in rows) / max(1, len(rows)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/label-free"))
    ap.add_argument("--quick", action="store_true", help="a few encoders and short runs (a smoke test)")
    ap.add_argument("--figure", type=Path, help="write the scatter of each metric against the probe here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    rows = run(args.out, args.quick)
    if args.figure:
        figure(rows, args.figure)
    print(json.dumps({"summary": summary(rows), "wall_s": round(time.perf_counter() - t0, 1), "rows": rows},
                     indent=1))


if __name__ == "__main__":
    main()
