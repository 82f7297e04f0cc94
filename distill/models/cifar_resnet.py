"""CIFAR ResNets (He et al. 2016, section 4.2) in the widths used by the CRD/DKD benchmark tables.

``resnetN`` has 3 stages of (N-2)/6 basic blocks at 16/32/64 channels; the ``x4`` variants
(resnet8x4, resnet32x4) use 64/128/256 channels after a 32-channel stem, as in RepDistiller.
"""

from __future__ import annotations

from torch import Tensor, nn

from distill.models._registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        # one ReLU module per use: quantizers find patterns by module, and a shared one reads as one node
        self.relu, self.relu_out = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages of basic blocks (strides 1, 2, 2), global pooling, linear head.

    Args:
        depth: 6n+2 layers (8, 14, 20, 32, 44, 56, 110, ...).
        widths: Channels of the stem and of the three stages.
        num_classes: Output logits.
        in_channels: Input image channels.
        dropout: Dropout probability before the linear head.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        in_ch = widths[0]
        for stage, out_ch in enumerate(widths[1:]):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_ch, out_ch, stride=2 if stage > 0 and i == 0 else 1))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        # Feature aliases (distill.features): the stages' outputs, and the pooled (B, C) vector the head reads.
        self.feature_aliases = {f"stage{i}": f"stages.{i - 1}" for i in range(1, len(stages) + 1)}
        self.feature_aliases["penultimate"] = "dropout"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, widths[3], H/4, W/4) -> logits (B, num_classes)
        features = self.stages(self.stem(x))
        return self.fc(self.dropout(self.pool(features).flatten(1)))


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@register_model
def resnet8(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """CIFAR ResNet-8 (0.08M parameters at 100 classes)."""
    return CifarResNet(8, _NARROW, num_classes, in_channels, dropout)


@register_model
def resnet14(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """CIFAR ResNet-14 (0.17M)."""
    return CifarResNet(14, _NARROW, num_classes, in_channels, dropout)


@register_model
def resnet20(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """CIFAR ResNet-20 (0.28M)."""
    return CifarResNet(20, _NARROW, num_classes, in_channels, dropout)


@register_model
def resnet32(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """CIFAR ResNet-32 (0.47M)."""
    return CifarResNet(32, _NARROW, num_classes, in_channels, dropout)


@register_model
def resnet44(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """CIFAR ResNet-44 (0.67M)."""
    return CifarResNet(44, _NARROW, num_classes, in_channels, dropout)


@register_model
def resnet56(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """CIFAR ResNet-56 (0.86M)."""
    return CifarResNet(56, _NARROW, num_classes, in_channels, dropout)


@register_model
def resnet110(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """CIFAR ResNet-110 (1.7M)."""
    return CifarResNet(110, _NARROW, num_classes, in_channels, dropout)


@register_model
def resnet8x4(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """ResNet-8 at 4x width (1.2M), the CRD/DKD student of resnet32x4."""
    return CifarResNet(8, _WIDE, num_classes, in_channels, dropout)


@register_model
def resnet32x4(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """ResNet-32 at 4x width (7.4M), the CRD/DKD teacher."""
    return CifarResNet(32, _WIDE, num_classes, in_channels, dropout)
