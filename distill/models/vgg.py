"""VGG with BatchNorm for 32x32 images (Simonyan & Zisserman 2015), in the CRD benchmark layout
(RepDistiller's ``models/vgg.py``, also mdistiller's): five conv stages, 2x2 max-pooling after the
first three, global pooling and a single linear head."""

from __future__ import annotations

from torch import Tensor, nn

from distill.models._registry import register_model
from distill.models.cnn import conv_block


class VGG(nn.Module):
    """Five conv stages; on a 32-pixel input they run at 32, 16, 8, 4 and 4 pixels.

    As published, max-pooling follows the first three stages only, so the last two both work on
    4x4 maps of a CIFAR image (pooling before every stage would leave the last one 2x2 with the
    same parameter count). A 64-pixel input is also pooled before the fourth stage, as there.

    Args:
        stages: Conv widths per stage (five stages).
        num_classes: Output logits.
        in_channels: Input image channels.
        bn: BatchNorm after every conv.
        dropout: Dropout probability before the linear head.
    """

    def __init__(self, stages: list[list[int]], num_classes: int, in_channels: int = 3, bn: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        ch = in_channels
        for widths in stages:
            layers: list[nn.Module] = []
            for width in widths:
                layers += conv_block(ch, width, bn)
                ch = width
            blocks.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(ch, num_classes))
        # Feature aliases (distill.features): each stage's output, and the pooled (B, C) vector.
        self.feature_aliases = {f"stage{i}": f"stages.{i - 1}" for i in range(1, len(blocks) + 1)}
        self.feature_aliases["penultimate"] = "head"

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, 32, 32) -> stages at 32, 16, 8, 4, 4 pixels -> (B, 512) -> logits (B, num_classes)
        pooled_before = (1, 2, 3, 4) if x.shape[-2] == 64 else (1, 2, 3)
        for i, stage in enumerate(self.stages):
            if i in pooled_before:
                x = self.pool(x)
            x = stage(x)
        return self.classifier(self.head(x))


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
