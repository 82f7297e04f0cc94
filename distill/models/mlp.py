"""Multilayer perceptrons for tabular rows: a feature vector (B, F) in, (B, K) logits out."""

from __future__ import annotations

from torch import Tensor, nn

from distill.models._registry import register_model


class MLP(nn.Module):
    """Hidden layers of Linear (+ BatchNorm) + ReLU (+ Dropout), then the output layer.

    Args:
        widths: Hidden layer widths.
        num_classes: Outputs (classes; 1 for a regression target).
        in_features: Width of the input rows.
        bn: BatchNorm after every hidden linear layer.
        dropout: Dropout probability after every hidden layer.
    """

    def __init__(self, widths: list[int], num_classes: int, in_features: int, bn: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        self.feature_aliases: dict[str, str] = {}
        for i, out in enumerate(widths):
            layers += [nn.Linear(width, out, bias=not bn), *([nn.BatchNorm1d(out)] if bn else []), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            self.feature_aliases[f"stage{i + 1}"] = f"hidden.{len(layers) - 1}"
            width = out
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        self.feature_aliases["penultimate"] = f"hidden.{len(layers) - 1}"

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(x.flatten(1)))


@register_model
def mlp_wide(num_classes: int = 2, in_channels: int = 16, bn: bool = True, dropout: float = 0.1) -> nn.Module:
    """A tabular teacher: three hidden layers of 512, 256 and 128 (``in_channels``: the row's width)."""
    return MLP([512, 256, 128], num_classes, in_channels, bn, dropout)


@register_model
def mlp_small(num_classes: int = 2, in_channels: int = 16, bn: bool = True, dropout: float = 0.0) -> nn.Module:
    """A tabular student: two hidden layers of 32 and 16, under a tenth of ``mlp_wide``'s parameters."""
    return MLP([32, 16], num_classes, in_channels, bn, dropout)
