"""Attention transfer: the student matches where the teacher's feature maps are active."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distill.errors import UsageError
from distill.losses.base import Distiller, Outputs


def attention_map(features: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention of Zagoruyko & Komodakis 2017: ``normalize(mean_c |f|^p)``, flattened.

    Args:
        features: (B, C, H, W) activations.
        p: Exponent of the activation magnitudes.

    Returns:
        (B, H*W) attention maps of unit L2 norm.
    """
    # sum / C rather than mean: the same value, but mean's backward hands a channels_last network an NCHW
    # gradient, and converting it back at every layer cost AT a fifth of its step time on CPU (docs/speed.md).
    return F.normalize((features.abs().pow(p).sum(dim=1) / features.shape[1]).flatten(1), dim=1)


def at_loss(student_features: Tensor, teacher_features: Tensor, p: float = 2.0) -> Tensor:
    """Attention-transfer loss of Zagoruyko & Komodakis 2017, "Paying More Attention to Attention:
    Improving the Performance of Convolutional Neural Networks via Attention Transfer" (ICLR).

    The mean squared difference of the normalized attention maps, as in the published CIFAR-100
    benchmark (RepDistiller); the larger map is first average-pooled to the smaller one's size.

    Args:
        student_features: (B, Cs, Hs, Ws).
        teacher_features: (B, Ct, Ht, Wt), no gradient expected.
        p: Exponent of the activation magnitudes.

    Returns:
        Scalar loss.
    """
    size = min(student_features.shape[2], teacher_features.shape[2]), min(student_features.shape[3], teacher_features.shape[3])
    if tuple(student_features.shape[2:]) != size:
        student_features = F.adaptive_avg_pool2d(student_features, size)
    if tuple(teacher_features.shape[2:]) != size:
        teacher_features = F.adaptive_avg_pool2d(teacher_features, size)
    return (attention_map(student_features, p) - attention_map(teacher_features, p)).pow(2).mean()


class AT(Distiller):
    """``CE + beta * sum over stages of at_loss``, returned as the terms ``ce`` and ``at``.

    Args:
        stages: Feature names read from both networks, paired in order (aliases such as ``stage1``;
            the published CIFAR-100 runs use every stage: ``[stage1, stage2, stage3]``).
        beta: Weight of the attention term, >= 0 (RepDistiller: 1000).
        p: Exponent of the activation magnitudes in the attention maps.
    """

    teacher_weights = ("beta",)

    def __init__(self, stages: tuple[str, ...] = ("stage1", "stage2"), beta: float = 1000.0,
                 p: float = 2.0) -> None:
        super().__init__()
        if not stages or beta < 0 or not p > 0:
            raise UsageError(f"AT needs stages, beta >= 0 and p > 0, got {stages}, {beta}, {p}")
        self.stages, self.beta, self.p = tuple(stages), beta, p
        self.student_features = self.teacher_features = self.stages

    def build(self, student: dict, teacher: dict) -> None:
        for name in self.stages:
            if len(student[name]) != 4 or len(teacher[name]) != 4:
                raise UsageError(f"AT: feature {name} must be a map (B, C, H, W) in both networks, got "
                                 f"{tuple(student[name])} and {tuple(teacher[name])}")

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        terms = {"ce": F.cross_entropy(student.logits, labels)}
        if self.needs_teacher:
            assert teacher is not None
            terms["at"] = self.beta * sum(at_loss(student.features[n], teacher.features[n], self.p) for n in self.stages)
        return terms
