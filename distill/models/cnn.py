"""Plain CNNs sized for 28x28 grey images (Fashion-MNIST) on a CPU."""

from __future__ import annotations

from torch import Tensor, nn

from distill.models._registry import register_model


def conv_block(in_ch: int, out_ch: int, bn: bool) -> list[nn.Module]:
    """3x3 same-padding conv (+ BatchNorm) + ReLU; the conv has no bias when BN follows it."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


class ConvNet(nn.Module):
    """Stages of 3x3 conv blocks, each stage ending in 2x2 max-pooling, then an MLP head.

    Args:
        stages: Channel widths, one list per stage (e.g. ``[[32], [64, 64]]``).
        hidden: Width of the hidden fully connected layer (0: none).
        num_classes: Output logits.
        in_channels: Input image channels.
        bn: BatchNorm after every conv.
        dropout: Dropout probability before each fully connected layer.
        global_pool: Average-pool the last feature map to 1x1 before the head.
    """

    def __init__(
        self,
        stages: list[list[int]],
        hidden: int,
        num_classes: int,
        in_channels: int = 1,
        bn: bool = True,
        dropout: float = 0.0,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        # Feature aliases (distill.features): each stage's pooled output, and the head's input.
        self.feature_aliases: dict[str, str] = {}
        for stage, widths in enumerate(stages, start=1):
            for width in widths:
                layers += conv_block(ch, width, bn)
                ch = width
            layers.append(nn.MaxPool2d(2))
            self.feature_aliases[f"stage{stage}"] = f"features.{len(layers) - 1}"
        # Adaptive pooling fixes the head's input size whatever the image size.
        side = 1 if global_pool else 3
        layers.append(nn.AdaptiveAvgPool2d(side))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        feat_dim = ch * side * side
        if hidden:
            head += [nn.Dropout(dropout), nn.Linear(feat_dim, hidden), nn.ReLU(inplace=True)]
            feat_dim = hidden
        self.feature_aliases["penultimate"] = f"classifier.{len(head) - 1}"  # (B, feat_dim) before the last linear
        head += [nn.Dropout(dropout), nn.Linear(feat_dim, num_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> logits (B, num_classes)
        return self.classifier(self.features(x))


def three_stage_student(widths: tuple[int, int, int], num_classes: int, in_channels: int, bn: bool,
                        dropout: float) -> ConvNet:
    """One conv per stage at 28, 14 and 7 pixels, no hidden layer: the shape of the Fashion-MNIST students."""
    return ConvNet([[width] for width in widths], hidden=0, num_classes=num_classes, in_channels=in_channels,
                   bn=bn, dropout=dropout)


@register_model
def cnn_wide(num_classes: int = 10, in_channels: int = 1, bn: bool = True, dropout: float = 0.3) -> nn.Module:
    """Wide CNN teacher for Fashion-MNIST (0.39M parameters, most in the cheap 1152x256 hidden layer)."""
    return ConvNet([[32], [64], [128]], hidden=256, num_classes=num_classes,
                   in_channels=in_channels, bn=bn, dropout=dropout)


@register_model
def cnn_deep(num_classes: int = 10, in_channels: int = 1, bn: bool = True, dropout: float = 0.3) -> nn.Module:
    """cnn_wide with a second 128-channel conv at 7x7 (0.54M parameters): the "full" Fashion-MNIST teacher.

    The extra conv sits where it is cheapest (after two poolings): about 1.7x cnn_wide's training cost.
    """
    return ConvNet([[32], [64], [128, 128]], hidden=256, num_classes=num_classes,
                   in_channels=in_channels, bn=bn, dropout=dropout)


@register_model
def cnn_small(num_classes: int = 10, in_channels: int = 1, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """Small CNN student for Fashion-MNIST (29k parameters, 1/13 of cnn_wide)."""
    return three_stage_student((16, 32, 64), num_classes, in_channels, bn, dropout)


@register_model
def cnn_medium(num_classes: int = 10, in_channels: int = 1, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """cnn_small with a 96-channel last conv (41k parameters) at about cnn_small's cost: the extra width is at 7x7."""
    return three_stage_student((16, 32, 96), num_classes, in_channels, bn, dropout)


@register_model
def cnn_narrow(num_classes: int = 10, in_channels: int = 1, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """cnn_small at 3/4 of its width (18k parameters, 1/31 of cnn_deep)."""
    return three_stage_student((12, 24, 48), num_classes, in_channels, bn, dropout)


@register_model
def cnn_mini(num_classes: int = 10, in_channels: int = 1, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """cnn_small at half its width (8.8k parameters, 1/44 of cnn_wide, 1/61 of cnn_deep): the Fashion-MNIST student.

    Small enough that labels alone leave it well short of the teacher, which is where distillation
    pays most (README, the full recipe).
    """
    return three_stage_student((8, 16, 32), num_classes, in_channels, bn, dropout)


@register_model
def cnn_tiny(num_classes: int = 10, in_channels: int = 1, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """Tiny CNN (1.4k parameters), for smoke tests and extreme compression."""
    return ConvNet([[8], [16]], hidden=0, num_classes=num_classes, in_channels=in_channels,
                   bn=bn, dropout=dropout, global_pool=True)
