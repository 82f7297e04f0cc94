"""Distillation for regression: the student regresses on the teacher's predictions and on the targets."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distill.errors import UsageError
from distill.losses.base import Distiller, Outputs


def regression_kd_loss(student: Tensor, teacher: Tensor, targets: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """The two terms of ``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, target)``.

    The teacher's predictions as regression targets, as in Bucilă, Caruana & Niculescu-Mizil 2006,
    "Model Compression" (KDD), mixed with the true targets.

    Args:
        student: (B,) student predictions (z-scored target units).
        teacher: (B,) teacher predictions, no gradient expected.
        targets: (B,) true targets, in the same units.
        alpha: Weight of the teacher term in [0, 1].

    Returns:
        ``((1 - alpha) * MSE(student, targets), alpha * MSE(student, teacher))``.
    """
    return (1 - alpha) * F.mse_loss(student, targets), alpha * F.mse_loss(student, teacher)


class RegressionKD(Distiller):
    """Regression KD: the terms ``mse`` (to the targets) and ``kd`` (to the teacher's predictions).

    The training system hands it z-scored predictions and targets, so ``alpha`` weighs errors of the
    same scale on any data. ``alpha=0`` is the same student trained alone on the targets.

    Args:
        alpha: Weight of the teacher term in [0, 1].
    """

    tasks = ("regression",)
    teacher_weights = ("alpha",)

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        predicted = student.logits.squeeze(1)  # (B,)
        if not self.needs_teacher:
            return {"mse": F.mse_loss(predicted, labels)}
        assert teacher is not None
        to_targets, to_teacher = regression_kd_loss(predicted, teacher.logits.squeeze(1), labels, self.alpha)
        return {"mse": to_targets, "kd": to_teacher}
