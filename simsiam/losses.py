"""SimSiam loss: D(p, z) = -cos(p, stopgrad(z));  L = D(p1, z2)/2 + D(p2, z1)/2  (paper Eq. 1-4).

Variants reproduce the paper's ablations: stop-grad off (Fig. 2, collapses), cross-entropy
similarity (Table 5), asymmetric loss (Table 6). `asymmetric_2x` is the asymmetric loss on
two sampled pairs per image; the engine feeds it a doubled batch, so here it equals `asymmetric`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, z) averaged over the batch; minimum -1."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def negative_cross_entropy(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-softmax(z) . log softmax(p) averaged over the batch (paper Sec. 4.5, Table 5)."""
    return -(F.softmax(z, dim=-1) * F.log_softmax(p, dim=-1)).sum(dim=-1).mean()


_SIMILARITY = {"cosine": negative_cosine, "cross_entropy": negative_cross_entropy}


def pair_loss(p: torch.Tensor, z: torch.Tensor, similarity: str = "cosine", stop_grad: bool = True) -> torch.Tensor:
    """D(p, z), with z treated as a constant when `stop_grad`."""
    return _SIMILARITY[similarity](p, z.detach() if stop_grad else z)


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, *,
                 stop_grad: bool = True, similarity: str = "cosine", symmetry: str = "symmetric") -> torch.Tensor:
    if similarity not in _SIMILARITY:
        raise ValueError(f"similarity must be one of {sorted(_SIMILARITY)}, got {similarity!r}")
    if symmetry == "symmetric":
        return 0.5 * pair_loss(p1, z2, similarity, stop_grad) + 0.5 * pair_loss(p2, z1, similarity, stop_grad)
    if symmetry in ("asymmetric", "asymmetric_2x"):
        return pair_loss(p1, z2, similarity, stop_grad)
    raise ValueError(f"symmetry must be symmetric, asymmetric or asymmetric_2x, got {symmetry!r}")
