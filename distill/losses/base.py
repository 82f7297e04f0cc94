"""The interface every distillation method implements."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import UsageError


@dataclass
class Outputs:
    """What a network produced for one batch.

    Attributes:
        logits: (B, num_classes) pre-softmax scores.
        features: Intermediate activations by the names the method asked for (its
            ``student_features`` / ``teacher_features``), captured with forward hooks
            (``distill.features.FeatureRecorder``); empty for logit methods.
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


class Distiller(nn.Module):
    """One distillation method: maps student and teacher outputs to named, weighted loss terms.

    The constructor's arguments are the method's settings, with the paper's defaults: the CLI lists
    them under ``--model.method.help NAME`` and takes them as ``--model.method.ARG``. Each is kept
    as an attribute of the same name (``settings`` reads them back).

    The training system sums the returned terms into the loss and logs each as
    ``train/loss_<name>``; a method never sums or logs itself.

    A method that reads intermediate features names them in ``student_features`` and
    ``teacher_features`` (aliases such as ``stage2`` or module names, see ``distill.features``).
    Once the networks exist, the training system probes their shapes and calls ``build``, where a
    method creates its learnable parts (FitNets regressors, CRD embeddings) as submodules: the
    optimizer and the checkpoints then see them.
    """

    student_features: tuple[str, ...] = ()
    teacher_features: tuple[str, ...] = ()
    # The data tasks the method's loss is defined for (the data's ``task``).
    tasks: tuple[str, ...] = ("classification",)
    # The settings that weigh the teacher's terms: all at 0, the method trains the student alone
    # (the honest twin of the same recipe) and the teacher is not run.
    teacher_weights: tuple[str, ...] = ()

    def build(self, student: dict[str, torch.Size], teacher: dict[str, torch.Size]) -> None:
        """Sizes the method's learnable parts from probed shapes, before the optimizer exists.

        Args:
            student: Shapes (with a batch dimension) of the student's ``logits`` and of each of
                its ``student_features``.
            teacher: The same for the teacher's ``logits`` and ``teacher_features``.
        """

    def settings(self) -> dict[str, Any]:
        """The method's constructor arguments as plain values (for metrics, reports and checkpoints)."""
        values = {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}
        return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}

    @property
    def needs_teacher(self) -> bool:
        """False when the method would ignore the teacher (every ``teacher_weights`` setting at 0): its forward pass is skipped."""
        return not self.teacher_weights or any(getattr(self, name) > 0 for name in self.teacher_weights)

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each sample's logits over the classes (Sun et al. 2024, "Logit Standardization in
    Knowledge Distillation", CVPR).

    A softmax of standardized logits depends only on their shape, not their scale, so a small
    student need not reproduce its teacher's logit range, only their order and relative gaps.

    Args:
        logits: (B, K) scores.
        eps: Added to the standard deviation, for samples whose logits are all equal.

    Returns:
        (B, K) logits with mean 0 and standard deviation 1 per sample.
    """
    mean = logits.mean(dim=1, keepdim=True)  # (B, 1)
    std = logits.std(dim=1, keepdim=True)  # (B, 1)
    return (logits - mean) / (std + eps)


class LabelMixedDistiller(Distiller):
    """A method whose teacher terms are mixed with the labels' cross-entropy by ``alpha``.

    ``forward`` returns ``ce`` = ``(1 - alpha) * CE`` and each of ``teacher_terms`` times ``alpha``,
    so ``alpha=0`` is the same student trained alone for every such method (and skips the teacher).

    Args:
        temperature: Softening temperature T > 0 of the teacher terms.
        alpha: Weight of the teacher terms in [0, 1].
        logit_standardize: Standardize the student's and the teacher's logits
            (``standardize_logits``) before the teacher terms; the cross-entropy keeps the raw ones.
    """

    teacher_weights = ("alpha",)

    def __init__(self, temperature: float, alpha: float, logit_standardize: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise UsageError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha
        self.logit_standardize = logit_standardize

    def teacher_terms(self, student: Outputs, teacher: Outputs, labels: Tensor) -> dict[str, Tensor]:
        """The method's own loss terms, before the ``alpha`` weight."""
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        terms = {"ce": (1 - self.alpha) * F.cross_entropy(student.logits, labels)}
        if self.needs_teacher:
            assert teacher is not None
            if self.logit_standardize:
                student = replace(student, logits=standardize_logits(student.logits))
                teacher = replace(teacher, logits=standardize_logits(teacher.logits))
            terms.update({name: self.alpha * value for name, value in self.teacher_terms(student, teacher, labels).items()})
        return terms
