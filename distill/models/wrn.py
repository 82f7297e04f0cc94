"""Wide residual networks (Zagoruyko & Komodakis 2016), pre-activation blocks, CIFAR layout."""

from __future__ import annotations

from torch import Tensor, nn

from distill.models._registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice, dropout between the convs, identity or 1x1 projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        # one ReLU module per use: quantizers find patterns by module, and a shared one reads as one node
        self.relu, self.relu_mid = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.projection = None
        if stride != 1 or in_ch != out_ch:
            self.projection = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        # The projection shares the pre-activation, as in the reference implementation.
        shortcut = x if self.projection is None else self.projection(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu_mid(self.bn2(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-widen: 3 stages of (depth-4)/6 pre-activation blocks at 16k/32k/64k channels.

    Args:
        depth: 6n+4 layers.
        widen: Width multiplier k.
        num_classes: Output logits.
        in_channels: Input image channels.
        dropout: Dropout probability inside each block.
    """

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_ch = widths[0]
        for stage, out_ch in enumerate(widths[1:]):
            for i in range(n):
                blocks.append(PreActBlock(in_ch, out_ch, 2 if stage > 0 and i == 0 else 1, dropout))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_ch, num_classes)
        # Feature aliases (distill.features): each stage's last block (pre-activation), and the pooled (B, C) vector.
        self.feature_aliases = {f"stage{i}": f"blocks.{i * n - 1}" for i in range(1, 4)}
        self.feature_aliases["penultimate"] = "head"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, 64k, H/4, W/4) -> logits (B, num_classes)
        return self.fc(self.head(self.blocks(self.stem(x))))


@register_model
def wrn_16_1(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-16-1 (0.18M parameters at 100 classes)."""
    return WideResNet(16, 1, num_classes, in_channels, dropout)


@register_model
def wrn_16_2(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-16-2 (0.70M)."""
    return WideResNet(16, 2, num_classes, in_channels, dropout)


@register_model
def wrn_40_1(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-40-1 (0.57M)."""
    return WideResNet(40, 1, num_classes, in_channels, dropout)


@register_model
def wrn_40_2(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-40-2 (2.2M)."""
    return WideResNet(40, 2, num_classes, in_channels, dropout)
