import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck

from simsiam.config import ModelConfig
from simsiam.models import PredictionMLP, ProjectionMLP, build_backbone, build_model


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_projector_matches_official_builder_3_layers():
    proj = ProjectionMLP(2048, 2048, 2048, layers=3)
    kinds = [type(m) for m in proj]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    assert all(lin.bias is None for lin in linears)  # all followed by BN
    bns = [m for m in proj if isinstance(m, nn.BatchNorm1d)]
    assert [bn.affine for bn in bns] == [True, True, False]  # output BN has no affine
    assert proj[-1].num_features == 2048


def test_projector_two_layers_for_small_images():
    proj = ProjectionMLP(512, 2048, 2048, layers=2)
    assert [type(m) for m in proj] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert proj[0].in_features == 512 and proj[3].out_features == 2048


def test_predictor_is_bottleneck_without_output_bn():
    pred = PredictionMLP(2048, 512)
    assert [type(m) for m in pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert pred[0].bias is None and pred[0].out_features == 512
    assert pred[3].bias is not None and pred[3].out_features == 2048


@pytest.mark.parametrize("bn,proj_bns,pred_bns,proj_out_bn,pred_out_bn", [
    ("none", 0, 0, False, False), ("hidden", 1, 1, False, False),
    ("default", 2, 1, True, False), ("all", 2, 2, True, True)])
def test_bn_variants_of_table_4(bn, proj_bns, pred_bns, proj_out_bn, pred_out_bn):
    m = build_model(ModelConfig(width=8, dim=64, proj_layers=2, bn=bn))
    count = lambda mod: sum(isinstance(x, nn.BatchNorm1d) for x in mod.modules())  # noqa: E731
    assert count(m.projector) == proj_bns and count(m.predictor) == pred_bns
    assert isinstance(m.projector[-1], nn.BatchNorm1d) == proj_out_bn
    assert isinstance(m.predictor[-1], nn.BatchNorm1d) == pred_out_bn
    last_linear = lambda mod: [x for x in mod if isinstance(x, nn.Linear)][-1]  # noqa: E731
    # The projector's last Linear has a bias exactly when no BN follows it (BN's shift replaces it);
    # the predictor's keeps its bias in every variant, as in the official code.
    assert (last_linear(m.projector).bias is not None) == (not proj_out_bn)
    assert last_linear(m.predictor).bias is not None
    hidden_linears = [x for x in m.projector if isinstance(x, nn.Linear)][:-1]
    assert all((lin.bias is None) == (bn != "none") for lin in hidden_linears)


def test_resnet50_backbone_equals_torchvision_and_zero_init_residual():
    m = build_model(ModelConfig(backbone="resnet50", width=64))
    ref = resnet50()
    shapes = lambda mod: {k: tuple(v.shape) for k, v in mod.state_dict().items() if not k.startswith("fc.")}  # noqa: E731
    assert shapes(m.backbone) == shapes(ref)  # every layer, buffer and shape of torchvision's, without fc
    assert _n_params(m.backbone) == _n_params(ref) - _n_params(ref.fc)
    assert m.backbone.out_dim == 2048 and isinstance(m.backbone.fc, nn.Identity)
    blocks = [b for b in m.backbone.modules() if isinstance(b, Bottleneck)]
    assert len(blocks) == 16 and all(torch.all(b.bn3.weight == 0) for b in blocks)
    assert m.backbone.conv1.kernel_size == (7, 7) and isinstance(m.backbone.maxpool, nn.MaxPool2d)
    assert m.projector[0].in_features == 2048


def test_resnet18_cifar_stem_and_width():
    m = build_model(ModelConfig(backbone="resnet18_cifar", width=64, in_channels=1))
    ref = resnet18()
    conv1 = m.backbone.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.in_channels == 1
    assert isinstance(m.backbone.maxpool, nn.Identity)
    # Same body as torchvision resnet18, only conv1 differs (7x7x3 -> 3x3x1).
    diff = _n_params(ref) - _n_params(ref.fc) - _n_params(m.backbone)
    assert diff == 64 * 3 * 7 * 7 - 64 * 1 * 3 * 3
    assert all(torch.all(b.bn2.weight == 0) for b in m.backbone.modules() if isinstance(b, BasicBlock))
    thin = build_model(ModelConfig(backbone="resnet18_cifar", width=16))
    assert thin.backbone.out_dim == 128 and thin.backbone.layer4[0].conv1.out_channels == 128


def test_forward_shapes_and_encoder():
    m = build_model(ModelConfig(width=8, dim=64, pred_dim=16, proj_layers=2, in_channels=1))
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    p1, p2, z1, z2 = m(x1, x2)
    assert p1.shape == p2.shape == z1.shape == z2.shape == (4, 64)
    m.eval()
    assert torch.allclose(m.encoder(x1), m.projector(m.backbone(x1)))
    assert m.backbone(x1).shape == (4, 64)


def test_under_bf16_autocast_only_the_backbone_is_bf16_and_the_heads_are_fp32():
    m = build_model(ModelConfig(width=8, dim=64, pred_dim=16, proj_layers=2, in_channels=1))
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.backbone(x1).dtype == torch.bfloat16
        p1, p2, z1, z2 = m(x1, x2)
    assert {t.dtype for t in (p1, p2, z1, z2)} == {torch.float32}
    (p1 - z2).pow(2).sum().backward()
    grads = [p.grad for p in m.predictor.parameters()] + [p.grad for p in m.projector.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_head_conv_widens_the_pooled_feature_and_leaves_other_backbones_unchanged():
    plain = build_backbone(ModelConfig(width=8, in_channels=1))
    wide = build_backbone(ModelConfig(width=8, in_channels=1, head_conv=96))
    assert wide.out_dim == 96 and wide(torch.randn(2, 1, 28, 28)).shape == (2, 96)
    assert set(plain.state_dict()) < set(wide.state_dict())  # old checkpoints keep their keys
    conv, bn, relu = wide.layer4[-1]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (64, 96, (1, 1)) and bn.num_features == 96
    assert (wide(torch.randn(2, 1, 28, 28)) >= 0).all()  # pooled after the ReLU


def test_predictor_switches():
    none = build_model(ModelConfig(width=8, dim=32, predictor="none"))
    assert isinstance(none.predictor, nn.Identity)
    fixed = build_model(ModelConfig(width=8, dim=32, predictor="fixed_random"))
    assert not any(p.requires_grad for p in fixed.predictor.parameters())
    assert any(p.requires_grad for p in fixed.projector.parameters())
