"""The interface every distillation method implements."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from torch import Tensor, nn


@dataclass
class Outputs:
    """What a network produced for one batch.

    Attributes:
        logits: (B, num_classes) pre-softmax scores.
        features: Named intermediate activations (empty unless a feature-based method asks
            for them, e.g. FitNets or attention transfer, captured with forward hooks).
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


class Distiller(nn.Module):
    """One distillation method: maps student and teacher outputs to named, weighted loss terms.

    The training system sums the returned terms into the loss and logs each as
    ``train/loss_<name>``; a method never sums or logs itself. Each constructor argument is kept
    as an attribute of the same name (``settings`` reads them back). Methods with learnable parts
    (FitNets regressors, CRD embeddings) hold them as submodules, so the optimizer sees them.
    """

    def settings(self) -> dict[str, float]:
        """The method's constructor arguments as plain values (for metrics and reports)."""
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}

    @property
    def needs_teacher(self) -> bool:
        """False when the method would ignore the teacher (e.g. KD with alpha=0): its forward pass is skipped."""
        return True

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError
