"""DIST: the student matches the teacher's relations between classes and between samples, not its exact probabilities."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distill.errors import UsageError
from distill.losses.base import Distiller, Outputs


def pearson_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` (N, M) with the same row of ``b``: (N,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Inter- and intra-class relation losses of Huang et al. 2022, "Knowledge Distillation from A
    Stronger Teacher" (NeurIPS).

    On probabilities at temperature T: inter-class = 1 - mean over samples of the Pearson
    correlation between the student's and the teacher's class distributions; intra-class = the
    same over classes, between their columns across the batch. Both times ``T^2``.

    Args:
        student_logits: (B, K) student scores.
        teacher_logits: (B, K) teacher scores, no gradient expected.
        temperature: T > 0.

    Returns:
        (inter, intra), two scalars.
    """
    t = temperature
    p_student = F.softmax(student_logits / t, dim=1)  # (B, K)
    p_teacher = F.softmax(teacher_logits / t, dim=1)  # (B, K)
    inter = 1 - pearson_correlation(p_student, p_teacher).mean()
    intra = 1 - pearson_correlation(p_student.t(), p_teacher.t()).mean()  # (K, B) rows: classes
    return inter * t**2, intra * t**2


class DIST(Distiller):
    """``CE + beta * inter + gamma * intra``, returned as the terms ``ce``, ``inter`` and ``intra``.

    Args:
        temperature: T > 0 (the paper: 1 on ImageNet; mdistiller's CIFAR-100 setting: 4).
        beta: Weight of the inter-class term, >= 0 (paper 1; CIFAR-100 setting 2).
        gamma: Weight of the intra-class term, >= 0 (paper 1; CIFAR-100 setting 2).
    """

    teacher_weights = ("beta", "gamma")

    def __init__(self, temperature: float = 1.0, beta: float = 1.0, gamma: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0 or beta < 0 or gamma < 0:
            raise UsageError(f"temperature must be > 0 and beta, gamma >= 0, got {temperature}, {beta}, {gamma}")
        self.temperature, self.beta, self.gamma = temperature, beta, gamma

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        terms = {"ce": F.cross_entropy(student.logits, labels)}
        if self.needs_teacher:
            assert teacher is not None
            inter, intra = dist_loss(student.logits, teacher.logits, self.temperature)
            terms.update(inter=self.beta * inter, intra=self.gamma * intra)
        return terms
