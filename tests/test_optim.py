import math

import pytest
import torch

from simsiam.config import ModelConfig, OptimConfig
from simsiam.models import build_model
from simsiam.optim import LARS, WarmupCosine, build_optimizer, scaled_lr


def _run(fix_pred_lr: bool, total=100, batch=512, warmup_epochs=0.0, spe=10):
    model = build_model(ModelConfig(width=4, dim=16, pred_dim=4, proj_layers=2))
    opt, sched = build_optimizer(model, OptimConfig(base_lr=0.05, fix_pred_lr=fix_pred_lr,
                                                    warmup_epochs=warmup_epochs), batch, total, spe)
    lrs = []
    for _ in range(total):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return opt, lrs


def test_lr_scales_with_batch():
    assert scaled_lr(0.05, 512) == pytest.approx(0.1)
    assert scaled_lr(0.03, 256) == pytest.approx(0.03)
    _, lrs = _run(True, batch=1024)
    assert lrs[0][0] == pytest.approx(0.2)


def test_fixed_predictor_lr_while_encoder_follows_cosine():
    opt, lrs = _run(True, total=100)
    names = [g["name"] for g in opt.param_groups]
    assert names == ["encoder", "predictor"]
    enc = [x[0] for x in lrs]
    pred = [x[1] for x in lrs]
    assert all(p == pytest.approx(0.1) for p in pred)
    assert enc[0] == pytest.approx(0.1)
    assert enc[50] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert enc[99] < 0.001 and all(a >= b for a, b in zip(enc, enc[1:]))


def test_decayed_predictor_lr_follows_schedule():
    _, lrs = _run(False, total=100)
    pred = [x[1] for x in lrs]
    assert pred == pytest.approx([x[0] for x in lrs])
    # the same cosine as the encoder's, so it really decays (a fixed lr would stay at 0.1)
    assert pred[0] == pytest.approx(0.1) and pred[50] == pytest.approx(0.05) and pred[99] < 0.001


def test_warmup_then_cosine():
    sched = WarmupCosine(total_steps=100, warmup_steps=10)
    assert sched(0) == pytest.approx(0.1) and sched(9) == pytest.approx(1.0)
    assert sched(10) == pytest.approx(1.0) and sched(55) == pytest.approx(0.5)


def test_lars_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=0.1, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001)
    w.grad = torch.tensor([[0.0, 2.0]])  # ||g|| = 2 -> trust = 0.001 * 5 / 2
    b.grad = torch.tensor([0.5])  # 1-d: no trust ratio
    opt.step()
    q = 0.001 * 5 / 2
    assert torch.allclose(w.data, torch.tensor([[3.0, 4.0 - 0.1 * 2 * q]]))
    assert torch.allclose(b.data, torch.tensor([1.0 - 0.1 * 0.5]))
