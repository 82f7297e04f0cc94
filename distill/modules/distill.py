"""Stage two: a student trained against a frozen teacher."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distill.checkpoint import model_from_checkpoint
from distill.errors import UsageError
from distill.losses import KD, Distiller, Outputs
from distill.models import count_parameters
from distill.modules.classifier import ClassifierSystem

TEACHER_PREFIX = "teacher."


class DistillModule(ClassifierSystem):
    """Trains ``model`` (the student) with a distillation method against a frozen teacher.

    The teacher is frozen here and only here: no parameter requires grad, it stays in eval
    mode through ``train()`` calls, runs under ``torch.no_grad()``, and its weights are left out
    of this stage's checkpoints (they are reloaded from ``teacher_ckpt``).

    Args:
        model: Student architecture name from the registry.
        teacher_ckpt: Checkpoint of a finished teacher stage (its architecture is read from it).
        temperature: KD softening temperature T > 0.
        alpha: Weight of the KD term in [0, 1]; 0 trains the student on labels alone.
        **kwargs: Everything ``ClassifierSystem`` takes (optimizer, schedule, regularization, ...).
    """

    def __init__(
        self,
        model: str = "cnn_small",
        teacher_ckpt: str = "checkpoints/teacher/best.ckpt",
        temperature: float = 4.0,
        alpha: float = 0.9,
        **kwargs: Any,
    ) -> None:
        # The loss validates its own arguments; build it first so bad values fail before any loading.
        distiller: Distiller = KD(temperature=temperature, alpha=alpha)
        super().__init__(model=model, **kwargs)
        self.distiller = distiller
        self.teacher = self._load_teacher(teacher_ckpt)
        self.teacher_params = count_parameters(self.teacher)

    def _load_teacher(self, path: str) -> nn.Module:
        teacher, hp = model_from_checkpoint(path)
        expected_shape = tuple(self.hparams.input_shape)
        if hp["num_classes"] != self.hparams.num_classes:
            raise UsageError(f"teacher {path} predicts {hp['num_classes']} classes but the data has "
                             f"{self.hparams.num_classes}")
        if tuple(hp["input_shape"]) != expected_shape:
            raise UsageError(f"teacher {path} takes inputs of shape {tuple(hp['input_shape'])} but the data has "
                             f"{expected_shape}")
        teacher.requires_grad_(False)
        return self.to_memory_format(teacher).eval()

    def train(self, mode: bool = True) -> "DistillModule":
        super().train(mode)
        self.teacher.eval()  # BatchNorm statistics and dropout of the teacher never switch to training
        return self

    def training_losses(self, images: Tensor, labels: Tensor, indices: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        student = Outputs(self.model(images))
        teacher = None
        if self.distiller.needs_teacher:
            # no_grad rather than inference_mode: inference tensors cannot take part in autograd.
            with torch.no_grad():
                teacher = Outputs(self.teacher(images))
        return student.logits, self.distiller(student, teacher, labels)

    def trainable_module(self) -> nn.Module:
        return nn.ModuleList([self.model, self.distiller])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]
        checkpoint["teacher_params"] = self.teacher_params

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming: the teacher comes from teacher_ckpt, not from this file; put it back for strict loading.
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state[TEACHER_PREFIX + key] = value
