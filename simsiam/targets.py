"""What the predictor's output p is pulled toward: `loss.target`.

- `online` (SimSiam, Eq. 1-4): z of the other view in the same step, under stop-gradient.
- `snapshot` (Sec. 5, "multi-step alternation"): z from a frozen copy of the encoder, refreshed every
  k optimizer steps; k=1 is SimSiam itself (paper, ImageNet linear: k=1/10/100 -> 68.1/68.7/68.9,
  one epoch 67.0).
- `moving_average` (Sec. 5, "expectation over augmentations"): a per-image memory
  eta_x <- m * eta_x + (1 - m) * z(T'(x)), indexed by the sample's global position in the
  training set; paper (no predictor, m=0.8): 55.0, against 0.1 without the memory. Memory starts at
  zero, so an image's first target is (1 - m) * z: the same direction as z.

Targets are detached: the loss's stop-gradient is implicit. Each keeps its state in the checkpoint
(`state_dict`), so a resumed run continues bit-identically.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from simsiam.config import Config
from simsiam.errors import ConfigError


class OnlineTargets:
    """SimSiam: the targets are the step's own z1, z2 (the loss applies the stop-gradient)."""

    def before_step(self, model: nn.Module, step: int) -> None:
        pass

    def __call__(self, z1, z2, x1, x2, positions):
        return z1, z2

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SnapshotTargets(OnlineTargets):
    """z from a frozen copy of `model`'s encoder, taken at steps 0, k, 2k, ... before that step's update."""

    def __init__(self, model: nn.Module, every: int) -> None:
        self.every = every
        self.encoder = copy.deepcopy(model.encoder).requires_grad_(False)
        self.taken_at: int | None = None

    def before_step(self, model: nn.Module, step: int) -> None:
        if self.taken_at is None or step % self.every == 0:
            self.encoder.load_state_dict(model.encoder.state_dict())
            self.taken_at = step

    @torch.no_grad()
    def __call__(self, z1, z2, x1, x2, positions):
        # Train-mode BN, as in the online forward: with k=1 this is exactly SimSiam's z.
        return self.encoder(x1).float(), self.encoder(x2).float()

    def state_dict(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "taken_at": self.taken_at}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.taken_at = state["taken_at"]


class MovingAverageTargets(OnlineTargets):
    """eta_x <- m * eta_x + (1 - m) * z(T'(x)); p of both views is pulled toward the updated eta_x.

    z(T'(x)) is the other view's z (asymmetric loss) or the mean of both views' z (symmetric). Under
    data parallelism every rank applies every rank's updates (all_gather), so the memories stay equal."""

    def __init__(self, n: int, dim: int, momentum: float, symmetric: bool, device: torch.device) -> None:
        self.memory = torch.zeros(n, dim, device=device)
        self.momentum, self.symmetric = momentum, symmetric

    @torch.no_grad()
    def __call__(self, z1, z2, x1, x2, positions):
        z = ((z1 + z2) / 2 if self.symmetric else z2).detach().float()
        positions = positions.to(self.memory.device)
        all_pos, all_z = _gather(positions), _gather(z)
        m = self.momentum
        self.memory[all_pos] = m * self.memory[all_pos] + (1 - m) * all_z
        eta = self.memory[positions]
        return eta, eta

    def state_dict(self) -> dict:
        return {"memory": self.memory.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.memory.copy_(state["memory"])


def _gather(t: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def build_targets(cfg: Config, model: nn.Module, n_samples: int, device: torch.device) -> OnlineTargets:
    """The `loss.target` of `cfg` for `model` (on its device) and a training set of `n_samples` images."""
    loss = cfg.loss
    if loss.target == "snapshot":
        return SnapshotTargets(model, loss.snapshot_every_steps)
    if loss.target == "moving_average":
        need = n_samples * cfg.model.dim * 4
        if need > cfg.data.memory_budget_mb * 2**20:
            raise ConfigError(f"loss.target=moving_average keeps {n_samples} x {cfg.model.dim} floats "
                              f"({need / 2**20:.0f} MiB), over data.memory_budget_mb={cfg.data.memory_budget_mb}; "
                              "use data.train_subset, a smaller model.dim or a larger budget")
        return MovingAverageTargets(n_samples, cfg.model.dim, loss.ma_momentum, loss.symmetry == "symmetric", device)
    return OnlineTargets()
