"""Stage two: a student trained against a frozen teacher."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from distill.checkpoint import load_trained
from distill.errors import UsageError
from distill.features import FeatureRecorder, probe_shapes
from distill.losses import KD, Distiller, Outputs, method_name
from distill.models import count_parameters
from distill.models.tta import average_logits, check_tta, describe, invariances, mirrors
from distill.modules.classifier import ClassifierSystem
from distill.teacher_cache import TeacherCache

TEACHER_PREFIX = "teacher."


class DistillModule(ClassifierSystem):
    """Trains ``model`` (the student) with a distillation method against a frozen teacher.

    The teacher is frozen here and only here: no parameter requires grad, it stays in eval
    mode through ``train()`` calls, runs under ``torch.no_grad()``, and its weights are left out
    of this stage's checkpoints (they are reloaded from ``teacher_ckpt``).

    The method is built with the networks: its ``build`` gets the probed shapes of the features it
    asked for, before the optimizer exists, so its learnable parts are trained and checkpointed.

    Args:
        model: Student architecture name from the registry.
        teacher_ckpt: Checkpoint of a finished stage (its architecture and layer widths are read from it).
        method: The distillation method with its settings, e.g. ``--model.method dkd
            --model.method.beta 2`` (``--model.method.help dkd`` lists them; ``distill.losses.DISTILLERS``
            the names). None: Hinton KD with its defaults. ``--model.method.alpha 0`` trains the
            same student on labels alone, for every method that mixes in the labels.
        teacher_tta: Test-time augmentation of the teacher: ``none``, ``flip`` (the image and its
            mirror) or ``flip_shift`` (those and 1-pixel shifts in four directions, bordered as the
            data's training crop pads, 10 views): its logits averaged over those views of each
            image are the soft targets. None: the teacher's own stage's, if it recorded one.
        teacher_cache: When the student's inputs are not randomly augmented, or only by transforms
            the teacher is invariant to (flips, for a teacher averaged over mirrored views),
            compute the teacher's logits once per training sample (on disk beside the teacher
            checkpoint, keyed by its bytes and the data) and look them up by index instead of
            running the teacher (``distill.teacher_cache.TeacherCache``).
        teacher_cache_dtype: Storage type of that table: ``float32`` or ``float16`` (half the size).
        teacher_bf16: Run the online teacher under bfloat16 autocast (on a GPU: about half the
            teacher's cost; its logits are cast back to float32 for the loss).
        **kwargs: Everything ``ClassifierSystem`` takes (optimizer, schedule, regularization, ...).
    """

    def __init__(
        self,
        model: str,
        teacher_ckpt: str,
        method: Distiller | None = None,
        teacher_tta: str | None = None,
        teacher_cache: bool = True,
        teacher_cache_dtype: Literal["float32", "float16"] = "float32",
        teacher_bf16: bool = False,
        **kwargs: Any,
    ) -> None:
        if teacher_tta is not None:
            check_tta(teacher_tta)
        super().__init__(model=model, **kwargs)
        self.distiller = method if method is not None else KD()
        # The method as plain values: what ran is readable from any checkpoint without importing code.
        self.hparams["method"] = method_name(self.distiller)
        self.hparams["method_settings"] = self.distiller.settings()
        self.teacher, teacher_hparams = self._load_teacher(teacher_ckpt)
        self.teacher_params = count_parameters(self.teacher)
        if self.num_params > self.teacher_params:
            rank_zero_warn(f"the student {model} ({self.num_params:,} parameters) is larger than its teacher "
                           f"({self.teacher_params:,}, {self.num_params / self.teacher_params:.1f}x): distillation "
                           "usually compresses; check --model.model and --model.teacher_ckpt")
        self.teacher_tta = teacher_tta or teacher_hparams.get("tta", "none")  # stages once recorded their own
        self.teacher_fill: tuple[float, ...] | None = None  # border of shifted views; the data's, set in setup
        self.student_recorder = self._recorder(self.model, self.distiller.student_features, detach=False)
        self.teacher_recorder = self._recorder(self.teacher, self.distiller.teacher_features, detach=True)
        self._build_method()
        self.cached_logits: Any = None  # a LogitTable, set by TeacherCache when it serves this run

    def hyperparameters_kept_apart(self) -> list[str]:
        return ["method"]

    def report_metrics(self) -> dict[str, Any]:
        return {**super().report_metrics(), "teacher_ckpt": self.hparams.teacher_ckpt,
                "teacher_params": self.teacher_params, "method": self.hparams.method,
                "method_settings": self.hparams.method_settings, "teacher_tta": self.teacher_tta}

    @property
    def distills(self) -> bool:
        return True

    def _load_teacher(self, path: str) -> tuple[nn.Module, dict[str, Any]]:
        trained = load_trained(path)
        hp = trained.hparams
        expected_shape = tuple(self.hparams.input_shape)
        if hp["num_classes"] != self.hparams.num_classes:
            raise UsageError(f"teacher {path} predicts {hp['num_classes']} classes but the data has "
                             f"{self.hparams.num_classes}")
        if tuple(hp["input_shape"]) != expected_shape:
            raise UsageError(f"teacher {path} takes inputs of shape {tuple(hp['input_shape'])} but the data has "
                             f"{expected_shape}")
        teacher = trained.network
        teacher.requires_grad_(False)
        return self.to_memory_format(teacher).eval(), hp

    @staticmethod
    def _recorder(network: nn.Module, names: tuple[str, ...], detach: bool) -> FeatureRecorder | None:
        # No names, no hooks: logit methods run the networks exactly as without this machinery.
        return FeatureRecorder(network, names, detach=detach) if names else None

    def _build_method(self) -> None:
        """Probes the shapes the method asked for (eval mode, no_grad) and lets it size its parts."""
        shapes: list[dict[str, torch.Size]] = []
        for network, recorder in ((self.model, self.student_recorder), (self.teacher, self.teacher_recorder)):
            if recorder is None:
                shapes.append({"logits": torch.Size([2, self.hparams.num_classes])})
            else:
                logits, features = probe_shapes(network, recorder, self.hparams.input_shape)
                shapes.append({"logits": logits, **features})
        self.distiller.build(*shapes)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if data is None:
            return
        if mirrors(self.teacher_tta) and not data.mirror_keeps_class:
            raise UsageError(f"teacher_tta={self.teacher_tta}: a mirrored input of this data does not keep its "
                             "class; use a view set without flips")
        self.teacher_fill = data.border_fill

    def train(self, mode: bool = True) -> "DistillModule":
        super().train(mode)
        self.teacher.eval()  # BatchNorm statistics and dropout of the teacher never switch to training
        return self

    def teacher_views(self) -> str:
        """The exact function the teacher computes on an input: its view set and their border."""
        return describe(self.teacher_tta, self.teacher_fill)

    def teacher_invariances(self) -> frozenset[str]:
        """Random transforms of the inputs that leave the teacher's logits unchanged."""
        return invariances(self.teacher_tta)

    @torch.no_grad()
    def teacher_classifier(self, inputs: Tensor) -> Tensor:
        """The frozen teacher's logits (B, K), averaged over ``teacher_tta``'s views."""
        return average_logits(self.teacher, inputs, self.teacher_tta, self.teacher_fill)

    def configure_callbacks(self) -> list[Callback]:
        return [TeacherCache(dtype=self.hparams.teacher_cache_dtype, enabled=self.hparams.teacher_cache)]

    def training_losses(self, inputs: Tensor, labels: Tensor, indices: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.student_recorder is None:
            student = Outputs(self.model(inputs))
        else:
            with self.student_recorder:
                logits = self.model(inputs)
            student = Outputs(logits, self.student_recorder.pop())
        teacher = None
        if self.cached_logits is not None:
            teacher = Outputs(self.cached_logits[indices])  # (B, K)
        elif self.distiller.needs_teacher:
            teacher = self.teacher_outputs(inputs)
        return student.logits, self.distiller(student, teacher, labels)

    def teacher_outputs(self, inputs: Tensor) -> Outputs:
        """The frozen teacher's float32 logits (B, K) and the features the method asked for, without autograd history."""
        # no_grad rather than inference_mode: inference tensors cannot take part in autograd.
        # Without teacher_bf16 the surrounding precision (e.g. Lightning's bf16-mixed) applies unchanged.
        bf16 = torch.autocast(inputs.device.type, dtype=torch.bfloat16) if self.hparams.teacher_bf16 else nullcontext()
        recorder = self.teacher_recorder if self.teacher_recorder is not None else nullcontext()
        with torch.no_grad(), bf16, recorder:
            logits = self.teacher_classifier(inputs).float()
        features = self.teacher_recorder.pop() if self.teacher_recorder is not None else {}
        return Outputs(logits, features)

    def teacher_logits(self, inputs: Tensor) -> Tensor:
        """The frozen teacher's float32 logits (B, K), as the online teacher computes them."""
        return self.teacher_outputs(inputs).logits

    def trainable_module(self) -> nn.Module:
        return nn.ModuleList([self.model, self.distiller])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]
        checkpoint["teacher_params"] = self.teacher_params

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # Resuming: the teacher comes from teacher_ckpt, not from this file; put it back for strict loading.
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state[TEACHER_PREFIX + key] = value

