"""CRD: contrastive representation distillation, with a bounded queue of negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import UsageError
from distill.losses.base import Distiller, Outputs
from distill.losses.kd import kd_loss


def contrastive_loss(anchors: Tensor, positives: Tensor, negatives: Tensor, temperature: float,
                     negative_mask: Tensor) -> Tensor:
    """InfoNCE form of the contrastive objective of Tian et al. 2020, "Contrastive Representation
    Distillation" (ICLR): each anchor must pick its own positive among the candidates.

    Args:
        anchors: (B, D) unit vectors (one network's embeddings).
        positives: (B, D) unit vectors (the other network's embeddings of the same samples).
        negatives: (N, D) unit vectors of other samples, from the other network.
        temperature: Softmax temperature tau > 0.
        negative_mask: (B, N) True where a negative must be left out (same class, or an empty slot).

    Returns:
        Scalar loss: cross-entropy of the positive among itself and the kept negatives, batch mean.
    """
    positive = (anchors * positives).sum(dim=1, keepdim=True)  # (B, 1)
    against = (anchors @ negatives.t()).masked_fill(negative_mask, float("-inf"))  # (B, N)
    logits = torch.cat([positive, against], dim=1) / temperature  # (B, 1 + N)
    return F.cross_entropy(logits, torch.zeros(len(anchors), dtype=torch.long, device=anchors.device))


class Embed(nn.Module):
    """Features (B, C, ...) -> unit vectors (B, D): flatten, linear, L2-normalize (CRD's embedding head)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, dim)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.linear(features.flatten(1)), dim=1)


class CRD(Distiller):
    """``CE + beta * (student->teacher + teacher->student contrastive losses) (+ alpha * KD)``.

    Terms ``ce``, ``crd`` and ``kd``. Negatives are the other samples of the batch and a queue of
    the last ``queue_size`` embeddings of each network (MoCo-style, He et al. 2020) with their
    labels, so that same-class negatives are masked: memory is fixed, whatever the dataset size
    (the published memory bank holds one vector per training sample). The queue is part of the
    method's state: checkpointed and resumed.

    Args:
        feature: Feature read from both networks (default: the pooled ``penultimate`` one).
        dim: Embedding dimension (the paper: 128).
        queue_size: Negatives kept per network (the paper's bank draws 16384).
        tau: Contrastive temperature tau (the paper: 0.07).
        beta: Weight of the contrastive term, >= 0 (RepDistiller: 0.8).
        alpha: Weight of a Hinton KD term on the logits, >= 0 (0: none).
        temperature: Softening temperature T of that KD term (the name every method gives it).
        mask_same_class: Leave negatives of the anchor's class out.
    """

    teacher_weights = ("beta", "alpha")

    def __init__(self, feature: str = "penultimate", dim: int = 128, queue_size: int = 4096,
                 tau: float = 0.07, beta: float = 0.8, alpha: float = 0.0, temperature: float = 4.0,
                 mask_same_class: bool = True) -> None:
        super().__init__()
        if dim < 1 or queue_size < 0 or not tau > 0 or beta < 0 or alpha < 0 or not temperature > 0:
            raise UsageError("CRD needs dim >= 1, queue_size >= 0, temperatures > 0 and weights >= 0")
        self.feature, self.dim, self.queue_size, self.tau = feature, dim, queue_size, tau
        self.beta, self.alpha, self.temperature, self.mask_same_class = beta, alpha, temperature, mask_same_class
        self.student_features = self.teacher_features = (feature,)
        self.embed_student: Embed | None = None
        self.embed_teacher: Embed | None = None
        self.register_buffer("queue_student", torch.zeros(queue_size, dim))
        self.register_buffer("queue_teacher", torch.zeros(queue_size, dim))
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long))  # -1: empty slot
        self.register_buffer("queue_next", torch.zeros((), dtype=torch.long))

    def build(self, student: dict[str, torch.Size], teacher: dict[str, torch.Size]) -> None:
        def width(shape: torch.Size) -> int:
            return int(torch.Size(shape[1:]).numel())

        self.embed_student = Embed(width(student[self.feature]), self.dim)
        self.embed_teacher = Embed(width(teacher[self.feature]), self.dim)

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        terms = {"ce": F.cross_entropy(student.logits, labels)}
        if not self.needs_teacher:
            return terms
        assert teacher is not None and self.embed_student is not None and self.embed_teacher is not None
        s = self.embed_student(student.features[self.feature])  # (B, D)
        t = self.embed_teacher(teacher.features[self.feature])  # (B, D)
        in_batch = torch.eye(len(labels), dtype=torch.bool, device=labels.device)  # (B, B): the positive itself
        queued = self.queue_labels.unsqueeze(0) < 0  # (1, Q): empty slots
        if self.mask_same_class:
            in_batch = in_batch | (labels.unsqueeze(1) == labels.unsqueeze(0))
            queued = queued | (labels.unsqueeze(1) == self.queue_labels.unsqueeze(0))
        mask = torch.cat([in_batch, queued.expand(len(labels), -1)], dim=1)  # (B, B + Q)
        student_to_teacher = contrastive_loss(s, t, torch.cat([t, self.queue_teacher]), self.tau, mask)
        teacher_to_student = contrastive_loss(t, s, torch.cat([s, self.queue_student]), self.tau, mask)
        terms["crd"] = self.beta * (student_to_teacher + teacher_to_student)
        if self.alpha > 0:
            terms["kd"] = self.alpha * kd_loss(student.logits, teacher.logits, self.temperature)
        if self.training:
            self._enqueue(s.detach(), t.detach(), labels)
        return terms

    @torch.no_grad()
    def _enqueue(self, student: Tensor, teacher: Tensor, labels: Tensor) -> None:
        """Writes the batch's embeddings over the oldest ones (a ring buffer of ``queue_size`` rows)."""
        if self.queue_size == 0:
            return
        n = min(len(labels), self.queue_size)
        rows = (self.queue_next + torch.arange(n, device=labels.device)) % self.queue_size  # (n,)
        self.queue_student[rows] = student[-n:].to(self.queue_student.dtype)
        self.queue_teacher[rows] = teacher[-n:].to(self.queue_teacher.dtype)
        self.queue_labels[rows] = labels[-n:]
        self.queue_next.copy_((self.queue_next + n) % self.queue_size)
