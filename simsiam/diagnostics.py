"""Collapse diagnostics (paper Sec. 4.1, Fig. 2): the per-channel std of the l2-normalised output.

For z with i.i.d. Gaussian entries, z/||z|| has per-channel std ~ 1/sqrt(d); a collapsed
encoder maps every image to the same vector, so the std falls to 0. `z_std_ratio` = std * sqrt(d)
puts any d on one scale: ~1 healthy, ~0 collapsed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COLLAPSE_RATIO = 0.1  # below this fraction of the Gaussian value we call it collapsed


@torch.no_grad()
def collapse_std(z: torch.Tensor) -> float:
    """Mean over channels of std over the batch of z/||z||."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean().item()


def z_std_ratio(z: torch.Tensor) -> float:
    return collapse_std(z) * math.sqrt(z.shape[1])


def is_collapsed(z_or_ratio: torch.Tensor | float, threshold: float = COLLAPSE_RATIO) -> bool:
    """True when z (or a precomputed z_std_ratio) is below `threshold` x the healthy 1/sqrt(d)."""
    ratio = z_std_ratio(z_or_ratio) if isinstance(z_or_ratio, torch.Tensor) else float(z_or_ratio)
    return ratio < threshold
