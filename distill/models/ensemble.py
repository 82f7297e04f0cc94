"""Several teachers as one: their predictions combined, and each one's kept apart for caching."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from distill.errors import UsageError

COMBINES = ("probabilities", "logits")


def combine_logits(members: Tensor, combine: str, temperature: float) -> Tensor:
    """One set of logits from several teachers' (B, n, K).

    ``probabilities``: ``T * log(mean_i softmax(z_i / T))``, logits whose softmax at temperature T
    is the members' mean probability at T (the ensemble of Hinton et al. 2015); a temperature-T
    loss on them is a loss against that mean. ``logits``: the mean of the logits.

    Args:
        members: (B, n, K) logits of the n teachers.
        combine: ``probabilities`` or ``logits``.
        temperature: T > 0 of the probability average.

    Returns:
        (B, K) logits.
    """
    if combine == "logits":
        return members.mean(dim=1)
    log_mean = torch.logsumexp(torch.log_softmax(members / temperature, dim=2), dim=1) - torch.log(
        torch.tensor(float(members.shape[1]), device=members.device))  # (B, K)
    return temperature * log_mean


class Ensemble(nn.Module):
    """Teachers of the same task, inputs (B, ...) -> combined logits (B, K).

    Args:
        teachers: Networks returning (B, K) logits for the same K classes.
        combine: ``probabilities`` (mean of the softened probabilities, the default) or ``logits``.
        temperature: T of the probability average.
    """

    def __init__(self, teachers: list[nn.Module], combine: Literal["probabilities", "logits"] = "probabilities",
                 temperature: float = 4.0) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise UsageError(f"unknown teacher combination {combine!r}; valid: {', '.join(COMBINES)}")
        if not temperature > 0:
            raise UsageError(f"teacher_ensemble_temperature must be > 0, got {temperature}")
        self.members = nn.ModuleList(teachers)
        self.combine, self.temperature = combine, temperature

    def member_logits(self, inputs: Tensor) -> Tensor:
        """(B, n, K): every teacher's logits."""
        return torch.stack([member(inputs).float() for member in self.members], dim=1)

    def combined(self, members: Tensor) -> Tensor:
        """(B, n, K) member logits -> (B, K) ensemble logits."""
        return combine_logits(members, self.combine, self.temperature)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.combined(self.member_logits(inputs))
