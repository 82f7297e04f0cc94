"""VGG with BatchNorm for 32x32 images (Simonyan & Zisserman 2015), in the CRD benchmark layout:
five conv stages, max-pooling between them, global pooling and a single linear head."""

from __future__ import annotations

from torch import Tensor, nn

from distill.models._registry import register_model
from distill.models.cnn import conv_block


class VGG(nn.Module):
    """Args:
        stages: Conv widths per stage; stages after the first start with 2x2 max-pooling.
        num_classes: Output logits.
        in_channels: Input image channels.
        bn: BatchNorm after every conv.
        dropout: Dropout probability before the linear head.
    """

    def __init__(self, stages: list[list[int]], num_classes: int, in_channels: int = 3, bn: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        # Feature aliases (distill.features): each stage's last activation, and the pooled (B, C) vector.
        self.feature_aliases: dict[str, str] = {}
        for i, widths in enumerate(stages):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for width in widths:
                layers += conv_block(ch, width, bn)
                ch = width
            self.feature_aliases[f"stage{i + 1}"] = f"features.{len(layers) - 1}"
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.feature_aliases["penultimate"] = "features"
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(ch, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, 512) -> logits (B, num_classes)
        return self.classifier(self.features(x))


@register_model
def vgg8(num_classes: int = 100, in_channels: int = 3, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """VGG-8 with BN (3.9M parameters at 100 classes)."""
    return VGG([[64], [128], [256], [512], [512]], num_classes, in_channels, bn, dropout)


@register_model
def vgg11(num_classes: int = 100, in_channels: int = 3, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """VGG-11 with BN (9.2M)."""
    return VGG([[64], [128], [256, 256], [512, 512], [512, 512]], num_classes, in_channels, bn, dropout)


@register_model
def vgg13(num_classes: int = 100, in_channels: int = 3, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """VGG-13 with BN (9.4M)."""
    return VGG([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], num_classes, in_channels, bn, dropout)
