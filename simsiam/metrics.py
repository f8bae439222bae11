"""Every metric key of the project, each with one meaning: the training loop, MLflow, the CLI and
flow JSON, sweep and reproduce rows, the report, the model card and the figures all use these
names for these numbers. Accuracies are percent top-1.

Two kNN numbers must never be confused: the monitor during training (`knn/top1`, on the seeded
`eval.knn_*_samples` subsets, once per epoch) and the evaluation after training on the full test
split (`knn/final_top1`, beside the linear probe)."""

from __future__ import annotations

import math

LOSS = "train/loss"  # SimSiam loss at a step (min -1)
Z_STD = "train/z_std"  # per-channel std of z/||z|| (collapse diagnostic, Fig. 2)
Z_STD_RATIO = "train/z_std_ratio"  # z_std * sqrt(d): ~1 healthy, -> 0 collapsed
LR = "train/lr"
EPOCH = "train/epoch"
STEPS = "train/steps"  # optimizer steps done when training ended

KNN_MONITOR = "knn/top1"  # the kNN monitor at an epoch end, on the seeded subsets
KNN_MONITOR_BEST = "knn/best_top1"  # the best monitor value so far

KNN_FINAL = "knn/final_top1"  # after training: kNN on the full test split
PROBE = "probe/top1"  # after training: linear probe on the full test split
PROBE_TRAIN = "probe/train_top1"  # the probe's accuracy on its own training features

# Label-free, on the fixed sample of training images (simsiam.label_free): at epoch ends and after training
RANKME = "label_free/rankme"  # effective rank of the features (1 collapsed .. min(N, D))
ALIGNMENT = "label_free/alignment"  # mean squared distance of two views' normalised features (lower: agree)
UNIFORMITY = "label_free/uniformity"  # log mean Gaussian potential over pairs (lower: spread out)
FEATURE_STD_RATIO = "label_free/std_ratio"  # std of h/||h|| x sqrt(D) of the backbone features
LABEL_FREE = (RANKME, ALIGNMENT, UNIFORMITY, FEATURE_STD_RATIO)

SWEEP_BEST_KNN = "sweep/best_knn_top1"  # a sweep's parent run: the best healthy trial's knn/best_top1

MEANING = {
    LOSS: "training loss at the last step (min -1)",
    Z_STD_RATIO: "collapse ratio z_std x sqrt(d) (~1 healthy, < 0.1 collapsed)",
    KNN_MONITOR: "kNN monitor at the last epoch (seeded subsets)",
    KNN_MONITOR_BEST: "best kNN monitor over the epochs",
    KNN_FINAL: "kNN top-1 on the full test split (%)",
    PROBE: "linear probe top-1 on the full test split (%)",
    PROBE_TRAIN: "linear probe top-1 on its training features (%)",
    RANKME: "RankMe: effective rank of the features on the label-free sample",
    ALIGNMENT: "alignment of two views' features (lower: views agree)",
    UNIFORMITY: "uniformity of the features (lower: spread out)",
    FEATURE_STD_RATIO: "collapse ratio of the backbone features (std of h/norm(h) x sqrt(D))",
}

# What a sweep can rank its trials by (`simsiam sweep --metric`): "max" or "min" is better.
OBJECTIVES = {KNN_MONITOR: "max", RANKME: "max", ALIGNMENT: "min", UNIFORMITY: "min", FEATURE_STD_RATIO: "max",
              LOSS: "min"}


def sweep_best(metric: str) -> str:
    """A sweep parent run's key for the best healthy trial's value of `metric` (best over its epochs)."""
    return SWEEP_BEST_KNN if metric == KNN_MONITOR else f"sweep/best_{metric.replace('/', '_')}"

TRAINING = (LOSS, Z_STD_RATIO, KNN_MONITOR, KNN_MONITOR_BEST, *LABEL_FREE)  # what a trained run reports at its end


def fmt(value) -> str:
    """A number as printed for people: 2 decimals (JSON keeps full precision)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    return f"{value:.2f}" if math.isfinite(value) else str(value)


def table(values: dict[str, float | None]) -> list[str]:
    """Markdown table lines for people: each key, its meaning and its value (2 decimals)."""
    return ["| key | metric | value |", "|---|---|---|",
            *(f"| `{k}` | {MEANING.get(k, k)} | {fmt(v)} |" for k, v in values.items())]


def pick(metrics: dict[str, float | None], keys: tuple[str, ...]) -> dict[str, float]:
    """`keys` of `metrics` that have a value."""
    return {k: metrics[k] for k in keys if metrics.get(k) is not None}
