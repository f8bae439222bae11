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
