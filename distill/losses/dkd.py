"""Decoupled knowledge distillation: the KD loss split into its target-class and non-target-class parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import UsageError
from distill.losses.base import LabelMixedDistiller, Outputs


def _binary_log_probs(log_probs: Tensor, target: Tensor) -> Tensor:
    """(B, 2) log of (p_target, 1 - p_target) from (B, K) log-probabilities, stable when p_target -> 1."""
    log_p_target = log_probs.gather(1, target[:, None])  # (B, 1)
    log_p_rest = torch.logsumexp(log_probs.masked_fill(_target_mask(log_probs, target), float("-inf")),
                                 dim=1, keepdim=True)  # (B, 1)
    return torch.cat([log_p_target, log_p_rest], dim=1)  # (B, 2)


def _target_mask(logits: Tensor, target: Tensor) -> Tensor:
    """(B, K) boolean mask, True at each row's target class."""
    return F.one_hot(target, logits.shape[1]).bool()


def _non_target(logits: Tensor, target: Tensor) -> Tensor:
    """(B, K-1) logits of the non-target classes, in class order."""
    b, k = logits.shape
    return logits[~_target_mask(logits, target)].view(b, k - 1)


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float,
             beta: float) -> tuple[Tensor, Tensor]:
    """Decoupled KD of Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR), eq. 6.

    Hinton's KD loss equals ``TCKD + (1 - p_t) * NCKD``: TCKD matches the binary split
    (target class vs. the rest) of the teacher, NCKD its distribution over the non-target
    classes. When the teacher is confident (p_t near 1), KD all but drops NCKD; DKD weighs it by
    a free ``beta`` instead. Both terms are KL divergences of temperature-softened
    distributions, averaged over the batch and multiplied by ``T^2`` as in KD.

    Args:
        student_logits: (B, K) student scores.
        teacher_logits: (B, K) teacher scores, no gradient expected.
        target: (B,) class indices.
        temperature: T > 0.
        beta: Weight of NCKD relative to TCKD (the paper's beta / alpha).

    Returns:
        (TCKD, beta * NCKD), two scalars.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)  # (B, K)
    tckd = F.kl_div(_binary_log_probs(log_p_student, target), _binary_log_probs(log_p_teacher, target),
                    reduction="batchmean", log_target=True)
    nckd = F.kl_div(F.log_softmax(_non_target(student_logits, target) / t, dim=1),  # (B, K-1)
                    F.log_softmax(_non_target(teacher_logits, target) / t, dim=1),
                    reduction="batchmean", log_target=True)
    return tckd * t**2, beta * nckd * t**2


class DKD(LabelMixedDistiller):
    """``(1 - alpha) * CE + alpha * (TCKD + beta * NCKD)``, returned as the terms ``ce``, ``tckd``, ``nckd``.

    ``alpha`` mixes labels and teacher as in ``KD``, so ``alpha=0`` is the same student alone for
    every method. The paper's weighting ``CE + a * TCKD + b * NCKD`` is ``alpha = a / (1 + a)``,
    ``beta = b / a`` here, up to an overall factor (which Adam-type optimizers ignore).

    Args:
        temperature: Softening temperature T > 0 (the paper uses 4 on CIFAR-100, 1 on ImageNet).
        alpha: Weight of the distillation terms in [0, 1].
        beta: Weight of NCKD relative to TCKD, >= 0 (the paper: 8 on CIFAR-100, 0.5 to 2 on ImageNet).
        logit_standardize: Z-score both models' logits before the distillation terms (Sun et al. 2024).
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, beta: float = 8.0,
                 logit_standardize: bool = False) -> None:
        super().__init__(temperature, alpha, logit_standardize)
        if not beta >= 0:
            raise UsageError(f"beta must be >= 0, got {beta}")
        self.beta = beta

    def teacher_terms(self, student: Outputs, teacher: Outputs, labels: Tensor) -> dict[str, Tensor]:
        tckd, nckd = dkd_loss(student.logits, teacher.logits, labels, self.temperature, self.beta)
        return {"tckd": tckd, "nckd": nckd}
