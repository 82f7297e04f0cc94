"""A regression network whose outputs come back in the target's units."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TargetScale(nn.Module):
    """``network(x) * std + mean``: the network learns z-scored targets, its users get real units.

    The mean and standard deviation of the training targets are buffers, so they travel in every
    state dict, export (ONNX) and prediction with the weights, and nothing downstream needs to know
    the network was trained on a rescaled target.

    Args:
        network: Any network with one output per sample, (B, ...) -> (B, 1).
        mean: Mean of the training targets.
        std: Their standard deviation (> 0).
    """

    def __init__(self, network: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        aliases = getattr(network, "feature_aliases", None)
        if aliases:  # feature taps keep their names through the wrapper
            self.feature_aliases = {alias: f"network.{name}" for alias, name in aliases.items()}

    def forward(self, inputs: Tensor) -> Tensor:
        return self.network(inputs) * self.std + self.mean  # (B, 1)

    def standardize(self, values: Tensor) -> Tensor:
        """Values in the target's units -> the z-scores the network learns."""
        return (values - self.mean) / self.std

