"""The evaluation's pictures (`figures/` of the run): the singular-value spectrum behind RankMe, and
with labelled data, where the classes sit in feature space at init and after training, what the
nearest neighbours of test images look like, and where the linear probe errs. Drawn from the
features the evaluation already computed."""

from __future__ import annotations

import torch
from mlflow import MlflowClient

from simsiam.tracking.figures import text_colour

BANK = 2000  # points in the embedding plot


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pca2(feats: torch.Tensor) -> torch.Tensor:
    x = feats.float() - feats.float().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return x @ v[:2].T


def embedding_figure(stages: dict[str, tuple[torch.Tensor, torch.Tensor]], classes: list[str]):
    """One PCA panel per stage (e.g. at init, trained): the kNN bank's features coloured by class."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 4.6), squeeze=False)
    for ax, (title, (feats, labels)) in zip(axes[0], stages.items()):
        xy = _pca2(feats[:BANK]).numpy()
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels[:BANK].numpy(), cmap="tab10", s=4, vmin=0, vmax=9)
        ax.set_title(f"{title}: PCA of {len(xy)} train features", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i)), label=c) for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return fig


def neighbors_figure(train_src, test_src, train, test, queries: int = 8, k: int = 8, classes: list[str] | None = None):
    """Each row: a test image (titled with its class), then its k nearest train images by cosine
    similarity, each titled with its class and that similarity; a red frame marks a neighbour of
    another class. `classes` (label -> name) defaults to `train_src.classes`."""
    plt = _plt()
    names = list(classes if classes is not None else getattr(train_src, "classes", None) or [])

    def name(label) -> str:
        return names[int(label)] if int(label) < len(names) else str(int(label))

    (ftr, ytr), (fte, yte) = train, test
    q = torch.linspace(0, len(fte) - 1, queries).long()
    sims = torch.nn.functional.normalize(fte[q].float(), dim=1) @ torch.nn.functional.normalize(ftr.float(), dim=1).T
    top = sims.topk(k, dim=1)
    fig, axes = plt.subplots(queries, k + 1, figsize=(1.25 * (k + 1), 1.6 * queries + 0.5), squeeze=False)
    for r in range(queries):
        cells = [(test_src.image(int(q[r])), f"query: {name(yte[q[r]])}", None)]
        cells += [(train_src.image(int(j)), f"{name(ytr[j])}\n{float(s):.2f}", bool(ytr[j] != yte[q[r]]))
                  for s, j in zip(top.values[r], top.indices[r])]
        for c, (img, title, wrong) in enumerate(cells):
            ax = axes[r][c]
            img = img.permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=8, color="red" if wrong else "black",
                         fontweight="bold" if wrong is None else "normal")
            for side in ax.spines.values():
                side.set_edgecolor("red" if wrong else "black" if wrong is None else "lightgrey")
                side.set_linewidth(2.5 if wrong or wrong is None else 0.5)
    fig.suptitle("Nearest train neighbours of test images: class and cosine similarity "
                 "(red frame: another class)", fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(y_true: torch.Tensor, y_pred: torch.Tensor, classes: list[str]):
    """The linear probe's confusion matrix (rows: true class, row-normalised) with each class's accuracy."""
    plt = _plt()
    n = len(classes) or int(max(y_true.max(), y_pred.max())) + 1
    cm = torch.zeros(n, n)
    cm.index_put_((y_true.long(), y_pred.long()), torch.ones(len(y_true)), accumulate=True)
    rates = cm / cm.sum(1, keepdim=True).clamp_min(1)
    # 0.75 in per cell: an 8 pt "0.00" (about 0.25 in wide) sits well inside its cell.
    fig, ax = plt.subplots(figsize=(0.75 * n + 3.5, 0.75 * n + 2))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, f"{float(rates[i, j]):.2f}", ha="center", va="center", fontsize=8,
                        color=text_colour(im.cmap(im.norm(float(rates[i, j])))))
    names = classes or [str(i) for i in range(n)]
    ax.set_yticks(range(n), [f"{c} ({100 * rates[i, i]:.0f}%)" for i, c in enumerate(names)], fontsize=8)
    ax.set_xticks(range(n), names, fontsize=8, rotation=45, ha="right")
    ax.set_ylabel("true class (its accuracy)"), ax.set_xlabel("predicted class")
    ax.set_title(f"Linear probe: {100 * rates.diagonal().mul(cm.sum(1)).sum() / cm.sum():.2f}% top-1", fontsize=9)
    fig.tight_layout()
    return fig


def spectrum_figure(spectra: dict[str, torch.Tensor]):
    """Each stage's singular values of the label-free sample's features, normalised to the largest, on
    a log scale, with its RankMe: a collapsed encoder's curve falls off a cliff after the first value."""
    from simsiam.label_free import rankme

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for title, s in spectra.items():
        s = s.double()
        label = f"{title}: RankMe {rankme(spectrum=s):.1f}"
        ax.semilogy(range(1, len(s) + 1), (s / s[0]).clamp_min(1e-12).numpy(), label=label)
    ax.set_xlabel("singular value index k"), ax.set_ylabel("s_k / s_1")
    ax.set_title("Singular values of the backbone features on the label-free sample", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def init_features(cfg, train_src, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The kNN bank's features under the architecture at its init (the training's seed): the "before"
    of the embedding figure."""
    from simsiam.evaluation import features_for

    return features_for(_init_backbone(cfg, device), cfg, train_src, torch.arange(min(BANK, len(train_src))), device)


def _init_backbone(cfg, device):
    """The backbone as the training built it (its seed), before any step."""
    from simsiam.models import build_model
    from simsiam.runtime import seed_everything

    seed_everything(cfg.train.seed)
    return build_model(cfg.model).backbone.to(device).eval()


def log_evaluation_figures(tracking_uri: str, run_id: str, kept: dict, test_src, init_of=None,
                           device=None) -> list[str]:
    """spectrum.png (from `simsiam.label_free.label_free_after_training`), and with labelled data
    embedding.png, neighbors.png and probe_confusion.png into the run, from what the evaluation kept
    (`simsiam.evaluation.evaluate_after_training`); with `init_of` (the config the backbone was built
    from) the spectrum and embedding figures show the features at init too. Returns the figures' paths."""
    plt, client, figs = _plt(), MlflowClient(tracking_uri), {}
    if "spectrum" in kept:
        init = {"at init": kept["label_free_sample"](_init_backbone(init_of, device), device)[1]} if init_of else {}
        figs["figures/spectrum.png"] = spectrum_figure(init | {"trained": kept["spectrum"]})
    if "train" in kept:
        train_src = kept["train_source"]
        classes = list(train_src.classes)
        init = {"at init": init_features(init_of, train_src, device)} if init_of is not None else {}
        figs |= {"figures/embedding.png": embedding_figure(init | {"trained": kept["train"]}, classes),
                 "figures/neighbors.png": neighbors_figure(train_src, test_src, kept["train"], kept["test"],
                                                           classes=classes),
                 "figures/probe_confusion.png": confusion_figure(kept["test"][1], kept["probe_pred"], classes)}
    for path, fig in figs.items():
        client.log_figure(run_id, fig, path)
        plt.close(fig)
    return list(figs)
