"""Label-free measures of a backbone's features, on a fixed sample of the training images: they judge
an encoder where no labels exist.

- RankMe (Garrido et al., ICML 2023): exp of the entropy of the normalised singular values of the
  N x D feature matrix, p_k = s_k / sum(s) + 1e-7, not centred, as the paper's Eq. 1-2. It counts
  the directions the features use: 1 for a collapsed encoder, at most min(N, D).
- Alignment and uniformity (Wang & Isola, ICML 2020) of the l2-normalised features: alignment is
  E ||f(x) - f(x')||^2 over two augmented views of an image (lower: views agree), uniformity is
  log E exp(-2 ||f(x) - f(y)||^2) over pairs of images (lower: spread over the sphere). A collapsed
  encoder aligns perfectly (0) and is as little uniform as can be (0), so alignment alone rewards it.
- The collapse ratio of the features: std over the sample of h/||h||, times sqrt(D)
  (`simsiam.diagnostics`; the training's `train/z_std_ratio` is the same measure on z).

The sample is drawn with a fixed seed (not the run's), so every run on the same data is measured on
the same images; its views come from the training augmentation, seeded per image.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from simsiam import metrics as M

RANKME_EPS = 1e-7  # the paper's epsilon for float32 features
SAMPLE_SEED = 0  # the sample's images and views: the same for every run
UNIFORMITY_T = 2.0


@torch.no_grad()
def singular_values(features: torch.Tensor) -> torch.Tensor:
    """The feature matrix's singular values, largest first (float64: small ones are the point)."""
    return torch.linalg.svdvals(features.double())


def rankme(features: torch.Tensor | None = None, spectrum: torch.Tensor | None = None) -> float:
    """RankMe of an N x D feature matrix (or of its singular values)."""
    s = singular_values(features) if spectrum is None else spectrum
    p = s / s.sum() + RANKME_EPS
    return math.exp(-(p * p.log()).sum().item())


@torch.no_grad()
def alignment(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared distance between the l2-normalised features of paired views (alpha = 2)."""
    return (F.normalize(a.double(), dim=1) - F.normalize(b.double(), dim=1)).pow(2).sum(1).mean().item()


@torch.no_grad()
def uniformity(features: torch.Tensor, t: float = UNIFORMITY_T) -> float:
    """log of the mean Gaussian potential exp(-t ||u - v||^2) over all pairs of normalised features."""
    d2 = torch.pdist(F.normalize(features.double(), dim=1)).pow(2)
    return (torch.logsumexp(-t * d2, 0) - math.log(len(d2))).item()


def measure(features: torch.Tensor, view_a: torch.Tensor,
            view_b: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """The label-free metrics (under their `simsiam.metrics` keys) and the singular values, from the
    sample's features and its pairs of augmented views' features."""
    from simsiam.diagnostics import z_std_ratio

    if not torch.isfinite(features).all():
        raise FloatingPointError("the backbone's features are not finite: the encoder diverged (lower optim.base_lr)")
    spectrum = singular_values(features)
    return {M.RANKME: rankme(spectrum=spectrum), M.ALIGNMENT: alignment(view_a, view_b),
            M.UNIFORMITY: uniformity(features), M.FEATURE_STD_RATIO: z_std_ratio(features)}, spectrum


class LabelFreeSample:
    """The fixed sample of the training images that the label-free metrics are measured on: the
    first `eval.label_free_samples` of a seeded draw, and for the first `eval.label_free_pairs` of
    them, two views under the training augmentation (seeded per image)."""

    def __init__(self, cfg, training_source) -> None:
        from simsiam.data import subset_indices
        from simsiam.streaming import ShardStream

        n = cfg.eval.label_free_samples
        source = training_source.sample_source(n, SAMPLE_SEED) if isinstance(training_source, ShardStream) \
            else training_source
        self.cfg, self.source = cfg, source
        self.indices = subset_indices(len(source), n, SAMPLE_SEED)
        order = torch.randperm(len(self.indices), generator=torch.Generator().manual_seed(SAMPLE_SEED + 1))
        self.pairs = self.indices[order[:cfg.eval.label_free_pairs]].sort().values  # spread over the sample
        self.label = _describe(cfg, training_source, len(self.indices), len(self.pairs))

    def __call__(self, backbone: nn.Module, device: str | torch.device = "cpu",
                 progress: Callable | None = None) -> tuple[dict[str, float], torch.Tensor]:
        """(metrics, singular values) of `backbone` on the sample, backbone left in its mode."""
        from simsiam.evaluation import features_for

        feats = features_for(backbone, self.cfg, self.source, self.indices, device, progress)[0]
        self.dim = feats.shape[1]
        a, b = self._view_features(backbone, device)
        return measure(feats, a, b)

    @torch.no_grad()
    def _view_features(self, backbone: nn.Module, device) -> tuple[torch.Tensor, torch.Tensor]:
        from simsiam.augment import MultiView, train_transform
        from simsiam.data import seeded_views

        d = self.cfg.data
        views = MultiView(train_transform(d.recipe, d.norm, d.image_size, self.cfg.model.in_channels,
                                          d.crop_min_scale), 2)
        was_training = backbone.training
        backbone.eval()
        out: tuple[list, list] = ([], [])
        for chunk in self.pairs.split(self.cfg.eval.feature_batch_size):
            pairs = [seeded_views(views, self.source[int(i)][0], SAMPLE_SEED, 0, int(i)) for i in chunk]
            for v, side in enumerate(out):
                side.append(backbone(torch.stack([p[v] for p in pairs]).to(device)).float().cpu())
        backbone.train(was_training)
        return torch.cat(out[0]), torch.cat(out[1])

    def tags(self) -> dict[str, str]:
        """What the metrics were measured on (after a measurement), as MLflow tags: the gate compares
        only equal sets."""
        return {"label_free.set": f"{self.label}, {self.dim}-d features", "label_free.images": str(len(self.indices))}


def label_free_after_training(backbone: nn.Module, cfg, training_source, device: torch.device,
                              keep: dict | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The label-free metrics of a trained backbone and what they were measured on (as tags), the
    values the last epoch's monitor gave for the same weights. `keep` receives the singular values."""
    sample = LabelFreeSample(cfg, training_source)
    metrics, spectrum = sample(backbone.to(device), device)
    if keep is not None:
        keep.update(spectrum=spectrum, label_free_sample=sample)
    return metrics, sample.tags()


def _describe(cfg, source, n: int, pairs: int) -> str:
    """What identifies the sample's images and views: the data (a staged version by name@version, which
    is its content; local files by dataset and root), how it was read (a streamed version samples
    whole shards), its size, and the image size and augmentation of the views."""
    from simsiam.streaming import ShardStream

    ref = getattr(source, "ref", None)
    data = f"{ref.name}@{ref.version}" if ref is not None else \
        f"local {source.name}" + (f" at {cfg.data.root}" if cfg.data.root else "") + f" ({len(source)} images)"
    read = ", streamed" if isinstance(source, ShardStream) else ""
    return (f"{n} images (seed {SAMPLE_SEED}) of {data}{read}, {pairs} view pairs, {cfg.data.image_size} px, "
            f"{cfg.data.recipe} views")
