"""The paper's recipe: SGD(momentum 0.9), lr = base_lr * batch / 256, cosine decay per iteration
(optional linear warm-up), predictor lr held fixed (`fix_pred_lr`, Table 1c); LARS for the probe."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from simsiam.config import OptimConfig
from simsiam.models import SimSiam


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule used by the paper: lr = base_lr x batch / 256."""
    return base_lr * batch_size / 256


def param_groups(model: SimSiam, fix_pred_lr: bool) -> list[dict]:
    encoder = [p for m in (model.backbone, model.projector) for p in m.parameters() if p.requires_grad]
    predictor = [p for p in model.predictor.parameters() if p.requires_grad]
    groups = [{"params": encoder, "name": "encoder", "fix_lr": False}]
    if predictor:
        groups.append({"params": predictor, "name": "predictor", "fix_lr": fix_pred_lr})
    return groups


class WarmupCosine:
    """lr factor at optimizer step `s`: linear warm-up to 1, then half-cosine to 0 at `total`."""

    def __init__(self, total_steps: int, warmup_steps: int = 0) -> None:
        self.total = max(1, total_steps)
        self.warmup = max(0, min(warmup_steps, self.total - 1))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: SimSiam, cfg: OptimConfig, batch_size: int, total_steps: int,
                    steps_per_epoch: int) -> tuple[torch.optim.SGD, LambdaLR]:
    init_lr = scaled_lr(cfg.base_lr, batch_size)
    groups = param_groups(model, cfg.fix_pred_lr)
    optimizer = torch.optim.SGD(groups, lr=init_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = WarmupCosine(total_steps, round(cfg.warmup_epochs * steps_per_epoch))
    lambdas = [(lambda _s: 1.0) if g["fix_lr"] else schedule for g in optimizer.param_groups]
    return optimizer, LambdaLR(optimizer, lambdas)


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as in the official SimSiam linear probe: layer-wise trust ratio on
    weight matrices only (biases/BN excluded), SGD momentum."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    p_norm, u_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(p_norm)
                    trust = torch.where(u_norm > 0, g["trust_coefficient"] * p_norm / u_norm, one)
                    q = torch.where(p_norm > 0, trust, one)
                    dp = dp.mul(q)
                mu = self.state[p].setdefault("mu", torch.zeros_like(p))
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss
