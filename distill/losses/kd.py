"""Hinton knowledge distillation: temperature-softened teacher probabilities as soft targets."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distill.losses.base import LabelMixedDistiller, Outputs


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Distillation loss of Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch
    (``batchmean``: the true KL per sample, unlike ``mean`` which also divides by the class
    count). The ``T^2`` factor keeps the gradient scale independent of ``T``.

    Args:
        student_logits: (B, K) student scores.
        teacher_logits: (B, K) teacher scores, no gradient expected.
        temperature: T > 0.

    Returns:
        Scalar loss.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)  # (B, K)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class KD(LabelMixedDistiller):
    """``alpha * kd_loss + (1 - alpha) * cross_entropy``, returned as the terms ``kd`` and ``ce``.

    Args:
        temperature: Softening temperature T > 0.
        alpha: Weight of the distillation term in [0, 1]; 0 is plain supervised training.
        logit_standardize: Z-score both models' logits before the distillation term (Sun et al. 2024).
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, logit_standardize: bool = False) -> None:
        super().__init__(temperature, alpha, logit_standardize)

    def teacher_terms(self, student: Outputs, teacher: Outputs, labels: Tensor) -> dict[str, Tensor]:
        return {"kd": kd_loss(student.logits, teacher.logits, self.temperature)}
