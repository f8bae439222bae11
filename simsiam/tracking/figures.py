"""The figures of a training run (`figures/` in its artifacts), drawn from the metric history the
reporter kept: each one a line plot with the reference lines that say how to read it."""

from __future__ import annotations

import math

import mlflow

from simsiam.config import Config

History = dict[str, list[tuple[int, float]]]


def log_training_figures(history: History, cfg: Config) -> None:
    """z_std.png (collapse diagnostic vs 1/sqrt(d) and 0), loss.png (vs the -1 minimum), knn.png."""
    dim = cfg.model.dim
    if "train/z_std" in history:
        _line("figures/z_std.png", *zip(*history["train/z_std"]), "step", "z std", "Collapse diagnostic",
              [(1 / math.sqrt(dim), "g", f"1/sqrt(d), d={dim}: healthy"), (0, "r", "0: collapsed")],
              label="std of z/||z|| (per-channel mean)")
    if "train/loss" in history:
        _line("figures/loss.png", *zip(*history["train/loss"]), "step", "loss", "SimSiam loss",
              [(-1, "r", "-1: minimum (collapse if reached fast)")])
    if "knn/top1" in history:
        knn = [v for _, v in history["knn/top1"]]
        epochs = [e for _, e in history.get("train/epoch", [])]
        xs = epochs[-len(knn):] if len(epochs) >= len(knn) else list(range(len(knn)))
        _line("figures/knn.png", xs, knn, "epoch", "kNN top-1 (%)",
              f"kNN monitor (k={cfg.eval.knn_k}, t={cfg.eval.knn_t})", [], marker="o")


def log_views_figure(views) -> None:
    """views.png: n images (columns) x their augmented views (rows), as the network sees them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, n_views = views.shape[:2]
    fig, axes = plt.subplots(n_views, n, figsize=(1.2 * n, 1.3 * n_views + 0.4), squeeze=False)
    for i in range(n):
        for v in range(n_views):
            img = views[i, v].permute(1, 2, 0).numpy()
            ax = axes[v][i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(f"view {v + 1}", fontsize=8)
    fig.suptitle("Training views at epoch 0 (one image per column)", fontsize=9)
    fig.tight_layout()
    mlflow.log_figure(fig, "figures/views.png")
    plt.close(fig)


def _line(path: str, xs, ys, xlabel: str, ylabel: str, title: str, hlines: list[tuple[float, str, str]],
          label: str | None = None, marker: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, label=label, marker=marker)
    for y, color, text in hlines:
        ax.axhline(y, color=color, ls="--", label=text)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title)
    if label or hlines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    mlflow.log_figure(fig, path)
    plt.close(fig)


LR_KEY, BATCH_KEY = "optim.base_lr", "train.batch_size"


def sweep_heatmap(rows: list[dict]):
    """base lr x batch -> best kNN top-1 over the trials of each cell; an X marks a cell where a
    trial collapsed. None when the sweep's grid is not over both lr and batch."""
    if not rows or LR_KEY not in rows[0] or BATCH_KEY not in rows[0]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lrs, batches = sorted({r[LR_KEY] for r in rows}), sorted({r[BATCH_KEY] for r in rows})
    best = np.full((len(batches), len(lrs)), np.nan)
    collapsed = np.zeros_like(best, dtype=bool)
    for r in rows:
        i, j = batches.index(r[BATCH_KEY]), lrs.index(r[LR_KEY])
        if r["best_knn"] is not None:
            best[i, j] = np.nanmax([best[i, j], r["best_knn"]])
        collapsed[i, j] |= bool(r["collapsed"])
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 2.5, 0.9 * len(batches) + 1.8))
    im = ax.imshow(best, cmap="viridis")
    for i in range(len(batches)):
        for j in range(len(lrs)):
            label = "-" if np.isnan(best[i, j]) else f"{best[i, j]:.1f}"
            ax.text(j, i, label + ("\nX collapsed" if collapsed[i, j] else ""), ha="center", va="center",
                    fontsize=8, color="red" if collapsed[i, j] else "white")
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs]), ax.set_xlabel("optim.base_lr")
    ax.set_yticks(range(len(batches)), [str(v) for v in batches]), ax.set_ylabel("train.batch_size")
    ax.set_title("Sweep: best kNN top-1 (%) per cell", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
