"""torchvision's ResNet-18 adapted to small images: a 3x3 stride-1 stem and no max-pooling,
so a 32x32 input keeps a 4x4 map before global pooling (the usual CIFAR adaptation)."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from distill.models._registry import register_model


@register_model
def resnet18(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """ResNet-18 for 32x32 images (11.2M parameters at 100 classes); random init, no hub weights."""
    model = tv_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if dropout:
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    # Feature aliases (distill.features): torchvision's four stages, and the pooled (B, C, 1, 1) map.
    model.feature_aliases = {f"stage{i}": f"layer{i}" for i in range(1, 5)}
    model.feature_aliases["penultimate"] = "avgpool"
    return model
