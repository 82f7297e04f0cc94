"""FitNets: the student's intermediate features regress the teacher's through a learnable adapter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import UsageError
from distill.losses.base import Distiller, Outputs
from distill.losses.kd import kd_loss


def hint_loss(regressed: Tensor, target: Tensor) -> Tensor:
    """Hint loss of Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (ICLR).

    The mean squared error between the regressed student features and the teacher's ("guided")
    features, averaged over every element as in the published implementations.

    Args:
        regressed: (B, C, H, W) or (B, C) student features after the regressor.
        target: Teacher features of the same shape, no gradient expected.

    Returns:
        Scalar loss.
    """
    return F.mse_loss(regressed, target)


class Regressor(nn.Module):
    """Maps student features (B, Cs, Hs, Ws) to the teacher's (B, Ct, Ht, Wt): 1x1 conv + BatchNorm + ReLU,
    then average pooling when the student's map is larger; vectors (B, Cs) -> (B, Ct): linear + BatchNorm."""

    def __init__(self, student: torch.Size, teacher: torch.Size) -> None:
        super().__init__()
        if len(student) != len(teacher) or len(student) not in (2, 4):
            raise UsageError(f"FitNets hint: student features {tuple(student)} and teacher features {tuple(teacher)} "
                             "must both be maps (B, C, H, W) or both vectors (B, C)")
        if len(student) == 4 and (student[2] < teacher[2] or student[3] < teacher[3]):
            raise UsageError(f"FitNets hint: the student's map {tuple(student[2:])} is smaller than the teacher's "
                             f"{tuple(teacher[2:])}; pick an earlier student stage or a later teacher one")
        self.size = tuple(teacher[2:])
        if len(student) == 4:
            self.layers = nn.Sequential(nn.Conv2d(student[1], teacher[1], 1, bias=False), nn.BatchNorm2d(teacher[1]),
                                        nn.ReLU())
        else:
            self.layers = nn.Sequential(nn.Linear(student[1], teacher[1], bias=False), nn.BatchNorm1d(teacher[1]))

    def forward(self, features: Tensor) -> Tensor:
        out = self.layers(features)
        if out.ndim == 4 and tuple(out.shape[2:]) != self.size:
            out = F.adaptive_avg_pool2d(out, self.size)
        return out


class FitNet(Distiller):
    """``CE + beta * hint (+ alpha * KD)``, returned as the terms ``ce``, ``hint`` and ``kd``.

    Single-stage training, as in the published CIFAR-100 benchmark (RepDistiller: ``-r 1 -a 0 -b 100``,
    the hint on the second stage), not the paper's two-stage schedule.

    Args:
        hint: The student feature that learns (an alias such as ``stage2`` or a module name).
        guided: The teacher feature it regresses; None: the same name as ``hint``.
        beta: Weight of the hint term, >= 0.
        alpha: Weight of a Hinton KD term on the logits, >= 0 (0: none).
        temperature: Temperature T > 0 of that KD term.
    """

    teacher_weights = ("beta", "alpha")

    def __init__(self, hint: str = "stage2", guided: str | None = None, beta: float = 100.0, alpha: float = 0.0,
                 temperature: float = 4.0) -> None:
        super().__init__()
        if beta < 0 or alpha < 0 or not temperature > 0:
            raise UsageError(f"beta and alpha must be >= 0 and temperature > 0, got {beta}, {alpha}, {temperature}")
        self.hint, self.guided = hint, guided
        self.beta, self.alpha, self.temperature = beta, alpha, temperature
        self.student_features = (hint,)
        self.teacher_features = (guided or hint,)
        self.regressor: Regressor | None = None

    def build(self, student: dict[str, torch.Size], teacher: dict[str, torch.Size]) -> None:
        self.regressor = Regressor(student[self.hint], teacher[self.guided or self.hint])

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        terms = {"ce": F.cross_entropy(student.logits, labels)}
        if not self.needs_teacher:
            return terms
        assert teacher is not None and self.regressor is not None
        regressed = self.regressor(student.features[self.hint])
        terms["hint"] = self.beta * hint_loss(regressed, teacher.features[self.guided or self.hint])
        if self.alpha > 0:
            terms["kd"] = self.alpha * kd_loss(student.logits, teacher.logits, self.temperature)
        return terms
