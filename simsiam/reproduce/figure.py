"""The paper's Fig. 2 on our data: training loss, the collapse diagnostic z_std * sqrt(d) and the kNN
monitor per epoch, with and without stop-gradient (one line per seed)."""

from __future__ import annotations

from pathlib import Path

from simsiam import metrics as M
from simsiam.diagnostics import COLLAPSE_RATIO

Curve = list[dict[str, float]]
PANELS = ((M.LOSS, "training loss (min -1)"), (M.Z_STD_RATIO, "z_std * sqrt(d) (1 healthy, 0 collapsed)"),
          (M.KNN_MONITOR, "kNN monitor top-1 (%)"))


def fig2(curves: dict[str, list[Curve]], path: Path) -> Path:
    """`curves`: label (e.g. "w/ stop-grad") -> one per-epoch curve per seed. Writes a PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for (key, title), ax in zip(PANELS, axes):
        for (label, runs), color in zip(curves.items(), ("tab:blue", "tab:red", "tab:green", "tab:purple")):
            for i, curve in enumerate(runs):
                pts = [(c["epoch"], c[key]) for c in curve if key in c]
                if pts:
                    ax.plot(*zip(*pts), color=color, alpha=0.9 if i == 0 else 0.45, marker="o", ms=3,
                            label=label if i == 0 else None)
        if key == M.Z_STD_RATIO:
            ax.axhline(COLLAPSE_RATIO, color="grey", ls="--", lw=0.8, label=f"collapse threshold {COLLAPSE_RATIO}")
        ax.set(title=title, xlabel="epoch")
        ax.legend(fontsize=7)
    fig.suptitle("SimSiam Fig. 2 on this data: with vs without stop-gradient")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
