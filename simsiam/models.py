"""SimSiam networks, laid out as in the official `simsiam/builder.py` (Chen & He, 2021).

encoder f = backbone (ResNet, fc removed) + projection MLP; predictor h = bottleneck MLP.
The BN layout of the heads is switchable to reproduce Table 4 of the paper.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tvr

from simsiam.config import ModelConfig

_BLOCKS = {
    "resnet18": (tvr.BasicBlock, [2, 2, 2, 2], False),
    "resnet18_cifar": (tvr.BasicBlock, [2, 2, 2, 2], True),
    "resnet50": (tvr.Bottleneck, [3, 4, 6, 3], False),
}


class ResNetBackbone(tvr.ResNet):
    """torchvision ResNet with a configurable base width, input channels and stem; `fc` is Identity.

    `cifar_stem` swaps the 7x7/2 conv + maxpool for a 3x3/1 conv and no pool: on 28-32 px
    inputs the ImageNet stem throws away 16x of the resolution (a known cause of ~37% CIFAR runs).
    `head_conv` ends layer4 with a 1x1 conv + BN + ReLU to that many channels before the pooling
    (the head of MobileNetV2 / EfficientNet), so a thin net's pooled feature is wide.
    """

    def __init__(self, block, layers, width: int = 64, in_channels: int = 3,
                 cifar_stem: bool = False, zero_init_residual: bool = True, head_conv: int | None = None) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # torchvision's bottleneck widening factor; 64 = none
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.out_dim = width * 8 * block.expansion
        if head_conv:  # pooled after the ReLU: a wide feature for ~7% more FLOPs (thin nets)
            self.layer4.append(nn.Sequential(nn.Conv2d(self.out_dim, head_conv, 1, bias=False),
                                             nn.BatchNorm2d(head_conv), nn.ReLU(inplace=True)))
            self.out_dim = head_conv
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        # Same init as torchvision.models.ResNet.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each residual branch starts as identity (Goyal et al.)
            for m in self.modules():
                if isinstance(m, tvr.Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, tvr.BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)


def build_backbone(cfg: ModelConfig) -> ResNetBackbone:
    block, layers, cifar_stem = _BLOCKS[cfg.backbone]
    return ResNetBackbone(block, layers, width=cfg.width, in_channels=cfg.in_channels,
                          cifar_stem=cifar_stem, zero_init_residual=cfg.zero_init_residual, head_conv=cfg.head_conv)


def _fc_bn_relu(in_dim: int, out_dim: int, bn: bool) -> list[nn.Module]:
    # No bias when BN follows: BN's shift makes it redundant.
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(out_dim))
    layers.append(nn.ReLU(inplace=True))
    return layers


class ProjectionMLP(nn.Sequential):
    """Projector g: (`layers`-1) x [Linear(no bias) -> BN -> ReLU], then Linear -> BN(affine=False).

    Paper: BN on every fc including the output, no ReLU on the output; 3 layers for ImageNet,
    2 for CIFAR (App. D). `bn`: "none" | "hidden" | "default" | "all" (Table 4).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 3, bn: str = "default") -> None:
        hidden_bn = bn != "none"
        out_bn = bn in ("default", "all")
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            mods += _fc_bn_relu(dim, hidden_dim, hidden_bn)
            dim = hidden_dim
        mods.append(nn.Linear(dim, out_dim, bias=not out_bn))
        if out_bn:
            mods.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*mods)


class PredictionMLP(nn.Sequential):
    """Predictor h: Linear(d, d/4, no bias) -> BN -> ReLU -> Linear(d/4, d); no BN on the output
    (the paper found BN there unstable, Table 4d — `bn="all"` adds it to reproduce that)."""

    def __init__(self, dim: int, hidden_dim: int, bn: str = "default") -> None:
        mods = _fc_bn_relu(dim, hidden_dim, bn != "none")
        mods.append(nn.Linear(hidden_dim, dim))
        if bn == "all":
            mods.append(nn.BatchNorm1d(dim))
        super().__init__(*mods)


class SimSiam(nn.Module):
    """f = projector(backbone(x)); p = predictor(z). The loss applies the stop-gradient."""

    def __init__(self, backbone: ResNetBackbone, projector: nn.Module, predictor: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor
        self.dim = dim

    @property
    def encoder(self) -> nn.Sequential:
        """Backbone + projector, the network whose outputs z are compared."""
        return nn.Sequential(self.backbone, self.projector)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        # One forward over the concatenated views would mix their BN statistics; the paper
        # (and official code) normalise each view's batch separately.
        h1, h2 = self.backbone(x1), self.backbone(x2)
        # Under autocast only the backbone runs in bf16/fp16: the heads' BN, the predictor and
        # the cosine compare nearly-equal vectors, where bf16's 8-bit mantissa costs quality.
        with torch.autocast(h1.device.type, enabled=False):
            z1, z2 = self.projector(h1.float()), self.projector(h2.float())
            return self.predictor(z1), self.predictor(z2), z1, z2


def build_model(cfg: ModelConfig) -> SimSiam:
    backbone = build_backbone(cfg)
    projector = ProjectionMLP(backbone.out_dim, cfg.proj_hidden_dim, cfg.dim, cfg.proj_layers, cfg.bn)
    if cfg.predictor == "none":
        predictor: nn.Module = nn.Identity()
    else:
        predictor = PredictionMLP(cfg.dim, cfg.pred_hidden, cfg.bn)
        if cfg.predictor == "fixed_random":  # Table 1b: h stays at its random init
            predictor.requires_grad_(False)
    return SimSiam(backbone, projector, predictor, cfg.dim)
