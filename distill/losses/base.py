"""The interface every distillation method implements."""

from __future__ import annotations

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
    ``train/loss_<name>``; a method never sums or logs itself. Methods with learnable parts
    (FitNets regressors, CRD embeddings) hold them as submodules, so the optimizer sees them.
    """

    @property
    def needs_teacher(self) -> bool:
        """False when the method would ignore the teacher (e.g. KD with alpha=0): its forward pass is skipped."""
        return True

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError
