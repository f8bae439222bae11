import math

import pytest
import torch
import torch.nn.functional as F

from simsiam.config import ModelConfig
from simsiam.losses import negative_cosine, negative_cross_entropy, simsiam_loss
from simsiam.models import build_model

P1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
P2 = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
Z1 = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
Z2 = torch.tensor([[0.0, 1.0], [0.0, 5.0]])


def test_aligned_vectors_give_minus_one():
    z = torch.randn(8, 16)
    assert simsiam_loss(2 * z, 3 * z, z, z).item() == pytest.approx(-1.0, abs=1e-6)


def test_cosine_values_by_hand():
    # D(P1,Z2): rows cos = 0, 1 -> mean 0.5 -> D = -0.5 ; D(P2,Z1): cos = 1/sqrt2, 3/(3*sqrt2) -> D = -1/sqrt2
    d12, d21 = -0.5, -1 / math.sqrt(2)
    assert negative_cosine(P1, Z2).item() == pytest.approx(d12)
    assert simsiam_loss(P1, P2, Z1, Z2).item() == pytest.approx(0.5 * d12 + 0.5 * d21)
    assert simsiam_loss(P1, P2, Z1, Z2, symmetry="asymmetric").item() == pytest.approx(d12)
    assert simsiam_loss(P1, P2, Z1, Z2, symmetry="asymmetric_2x").item() == pytest.approx(d12)


def test_cross_entropy_values_by_hand():
    # row 1: softmax(Z2[0]) = [1/(1+e), e/(1+e)], log softmax(P1[0]) = [log(e/(1+e)), log(1/(1+e))]
    e = math.e
    s = [1 / (1 + e), e / (1 + e)]
    row1 = -(s[0] * math.log(e / (1 + e)) + s[1] * math.log(1 / (1 + e)))
    sz = [1 / (1 + e**5), e**5 / (1 + e**5)]
    row2 = -(sz[0] * math.log(1 / (1 + e**2)) + sz[1] * math.log(e**2 / (1 + e**2)))
    assert negative_cross_entropy(P1, Z2).item() == pytest.approx((row1 + row2) / 2, rel=1e-6)
    full = simsiam_loss(P1, P2, Z1, Z2, similarity="cross_entropy")
    expected = 0.5 * negative_cross_entropy(P1, Z2) + 0.5 * negative_cross_entropy(P2, Z1)
    assert full.item() == pytest.approx(expected.item())


def test_unknown_variant_rejected():
    with pytest.raises(ValueError, match="symmetry"):
        simsiam_loss(P1, P2, Z1, Z2, symmetry="both")


def _encoder_grads(stop_grad: bool, hand_written: bool):
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=4, dim=16, pred_dim=4, proj_layers=2, in_channels=1))
    torch.manual_seed(1)
    x1, x2 = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 12, 12)
    p1, p2, z1, z2 = model(x1, x2)
    if hand_written:  # gradient through p only: z enters as a constant
        def cos(a, b):
            return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
        c1, c2 = z1.detach().clone(), z2.detach().clone()
        loss = -0.5 * cos(p1, c2).mean() - 0.5 * cos(p2, c1).mean()
    else:
        loss = simsiam_loss(p1, p2, z1, z2, stop_grad=stop_grad)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.backbone.parameters() if p.grad is not None])


def test_stop_gradient_stops_gradients():
    with_sg = _encoder_grads(stop_grad=True, hand_written=False)
    by_hand = _encoder_grads(stop_grad=True, hand_written=True)
    without_sg = _encoder_grads(stop_grad=False, hand_written=False)
    assert torch.allclose(with_sg, by_hand, atol=1e-7, rtol=1e-5)
    assert with_sg.abs().sum() > 0
    assert not torch.allclose(with_sg, without_sg, atol=1e-6)


def test_z_branch_gets_no_gradient_with_stop_grad():
    z = torch.randn(4, 8, requires_grad=True)
    p = torch.randn(4, 8, requires_grad=True)
    simsiam_loss(p, p, z, z).backward()
    assert z.grad is None and p.grad is not None
    z.grad = None
    simsiam_loss(p, p, z, z, stop_grad=False).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_cosine_matches_torch_functional():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    assert negative_cosine(a, b).item() == pytest.approx(-F.cosine_similarity(a, b).mean().item())
