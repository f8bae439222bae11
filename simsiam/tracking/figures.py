"""The figures of a training run (`figures/` in its artifacts), drawn from the metric history the
reporter kept: each one a line plot with the reference lines that say how to read it."""

from __future__ import annotations

import math

import mlflow

from simsiam import metrics as M
from simsiam.config import Config

History = dict[str, list[tuple[int, float]]]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def text_colour(background) -> str:
    """The text colour, black or white, that contrasts more with `background` (any matplotlib colour), by
    WCAG relative luminance: black above 0.179, the luminance where both give the same contrast ratio."""
    from matplotlib.colors import to_rgb

    c = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in to_rgb(background)]
    return "black" if 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] > 0.179 else "white"


def training_figures(history: History, cfg: Config) -> dict:
    """{artifact path: Figure}: z_std.png (collapse diagnostic vs 1/sqrt(d) and 0), loss.png (vs the
    -1 minimum), knn.png (per epoch); those whose metric is in `history`."""
    dim, figs = cfg.model.dim, {}
    if M.Z_STD in history:
        figs["figures/z_std.png"] = _line(
            *zip(*history[M.Z_STD]), "step", "z std", "Collapse diagnostic",
            [(1 / math.sqrt(dim), "g", f"1/sqrt(d), d={dim}: healthy"), (0, "r", "0: collapsed")],
            label="std of z/||z|| (per-channel mean)")
    if M.LOSS in history:
        figs["figures/loss.png"] = _line(*zip(*history[M.LOSS]), "step", "loss", "SimSiam loss",
                                         [(-1, "r", "-1: minimum (collapse if reached fast)")])
    if M.KNN_MONITOR in history:
        knn = [v for _, v in history[M.KNN_MONITOR]]
        epochs = [e for _, e in history.get(M.EPOCH, [])]
        xs = epochs[-len(knn):] if len(epochs) >= len(knn) else list(range(len(knn)))
        figs["figures/knn.png"] = _line(xs, knn, "epoch", "kNN top-1 (%)",
                                        f"kNN monitor (k={cfg.eval.knn_k}, t={cfg.eval.knn_t})", [], marker="o")
    return figs


def log_training_figures(history: History, cfg: Config) -> None:
    """`training_figures` into the active MLflow run."""
    plt = _plt()
    for path, fig in training_figures(history, cfg).items():
        mlflow.log_figure(fig, path)
        plt.close(fig)


def views_figure(views, originals=None):
    """n images (columns) x their augmented views (rows), as the network sees them; with `originals`
    (n C x H x W images in [0, 1], each at its own size), a first row "original" shows what the
    augmentation started from."""
    plt = _plt()
    n, n_views = views.shape[:2]
    rows = ([("original", list(originals))] if originals is not None else []) + [
        (f"view {v + 1}", [views[i, v] for i in range(n)]) for v in range(n_views)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.3 * len(rows) + 0.4), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for i, img in enumerate(images):
            img = img.permute(1, 2, 0).numpy()
            ax = axes[r][i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("Training views at epoch 0 (one image per column)", fontsize=9)
    fig.tight_layout()
    return fig


def log_views_figure(views, originals=None) -> None:
    """views.png (`views_figure`) into the active MLflow run."""
    fig = views_figure(views, originals)
    mlflow.log_figure(fig, "figures/views.png")
    _plt().close(fig)


def _line(xs, ys, xlabel: str, ylabel: str, title: str, hlines: list[tuple[float, str, str]],
          label: str | None = None, marker: str | None = None):
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, label=label, marker=marker)
    for y, color, text in hlines:
        ax.axhline(y, color=color, ls="--", label=text)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title)
    if xlabel in ("epoch", "step"):  # counts: no 0.25-epoch ticks when a run has only a few epochs
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if label or hlines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


LR_KEY, BATCH_KEY = "optim.base_lr", "train.batch_size"


def sweep_heatmap(rows: list[dict], metric: str = M.KNN_MONITOR):
    """base lr x batch -> the best value of the sweep's metric over the trials of each cell (for the kNN
    monitor, its best top-1); a red frame and an X mark a cell where a trial collapsed. None when the
    sweep's grid is not over both lr and batch."""
    if not rows or LR_KEY not in rows[0] or BATCH_KEY not in rows[0]:
        return None
    plt = _plt()
    import numpy as np
    from matplotlib.patches import Rectangle

    lrs, batches = sorted({r[LR_KEY] for r in rows}), sorted({r[BATCH_KEY] for r in rows})
    key, better = (M.KNN_MONITOR_BEST, np.nanmax) if metric == M.KNN_MONITOR else \
        ("objective", np.nanmax if M.OBJECTIVES[metric] == "max" else np.nanmin)
    best = np.full((len(batches), len(lrs)), np.nan)
    collapsed = np.zeros_like(best, dtype=bool)
    for r in rows:
        i, j = batches.index(r[BATCH_KEY]), lrs.index(r[LR_KEY])
        if r.get(key) is not None:
            best[i, j] = better([best[i, j], r[key]])
        collapsed[i, j] |= bool(r["collapsed"])
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 2.5, 0.9 * len(batches) + 1.8))
    # A fixed 0-100 % scale, not the cells' own min-max: with autoscaling, a sweep whose cells all sit
    # within a point or two of each other spans the whole colormap and reads as good-vs-bad; fixed,
    # one colour means the same accuracy in every sweep, and the numbers in the cells give the detail.
    percent = metric == M.KNN_MONITOR
    im = ax.imshow(best, cmap="viridis", vmin=0 if percent else None, vmax=100 if percent else None)
    for i in range(len(batches)):
        for j in range(len(lrs)):
            label = "-" if np.isnan(best[i, j]) else f"{best[i, j]:.2f}"
            cell = ax.get_facecolor() if np.isnan(best[i, j]) else im.cmap(im.norm(best[i, j]))
            ax.text(j, i, label + ("\nX collapsed" if collapsed[i, j] else ""), ha="center", va="center",
                    fontsize=8, color=text_colour(cell), fontweight="bold" if collapsed[i, j] else "normal")
            if collapsed[i, j]:
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="red", lw=2.5))
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs]), ax.set_xlabel("optim.base_lr")
    ax.set_yticks(range(len(batches)), [str(v) for v in batches]), ax.set_ylabel("train.batch_size")
    label = f"{M.KNN_MONITOR_BEST} (%)" if percent else f"best {metric}"
    ax.set_title(f"Sweep: {label} per cell\nred frame: a trial collapsed", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label=label)
    fig.tight_layout()
    return fig
