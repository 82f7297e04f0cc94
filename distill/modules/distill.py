"""Stage two: a student trained against a frozen teacher."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from distill import teacher_cache
from distill.checkpoint import load_trained
from distill.errors import UsageError
from distill.losses import Distiller, Outputs, create_distiller
from distill.models import count_parameters
from distill.models.tta import check_tta, describe, mirrors
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
        temperature: Softening temperature T > 0 of the distillation loss.
        alpha: Weight of the distillation terms in [0, 1], the labels' cross-entropy taking the rest;
            0 trains the student on labels alone. The default 0.9 is Hinton's weight, used by the
            Fashion-MNIST and CIFAR recipes alike (measured over seeds, README recipe notes).
        method: Distillation method, a key of ``distill.losses.DISTILLERS``: ``kd`` (Hinton et al.
            2015) or ``dkd`` (decoupled KD, Zhao et al. 2022).
        beta: DKD only: weight of the non-target-class term relative to the target-class one
            (None: the method's default, 8).
        logit_standardize: Z-score the student's and the teacher's logits before the distillation
            terms (Sun et al. 2024, "Logit Standardization in Knowledge Distillation"): the student
            matches the shape of the teacher's logits, not their scale (None: the method's default, off).
        teacher_tta: Test-time augmentation of the teacher (``none``, ``flip`` or ``flip_shift``, see
            ``ClassifierSystem``): its logits averaged over those views of each image are the
            soft targets. Default: the one the teacher's own stage used (its ``tta``).
        teacher_cache: When the student's inputs are not randomly augmented, or only by transforms
            the teacher is invariant to (flips, for a teacher with test-time augmentation),
            compute the teacher's logits once per training image (cached on disk beside the teacher
            checkpoint, keyed by its bytes and the data) and look them up by index instead of
            running the teacher.
        teacher_bf16: Run the online teacher under bfloat16 autocast (on a GPU: about half the
            teacher's cost; its logits are cast back to float32 for the loss).
        **kwargs: Everything ``ClassifierSystem`` takes (optimizer, schedule, regularization, ...).
    """

    def __init__(
        self,
        model: str = "cnn_mini",
        teacher_ckpt: str = "checkpoints/teacher/best.ckpt",
        temperature: float = 2.0,
        alpha: float = 0.9,
        method: str = "kd",
        beta: float | None = None,
        logit_standardize: bool | None = None,
        teacher_tta: str | None = None,
        teacher_cache: bool = True,
        teacher_bf16: bool = False,
        **kwargs: Any,
    ) -> None:
        # The loss validates its own arguments; build it first so bad values fail before any loading.
        distiller: Distiller = create_distiller(method, temperature=temperature, alpha=alpha, beta=beta,
                                                logit_standardize=logit_standardize)
        if teacher_tta is not None:
            check_tta(teacher_tta)
        super().__init__(model=model, **kwargs)
        self.distiller = distiller
        self.teacher = self._load_teacher(teacher_ckpt)
        self.teacher_params = count_parameters(self.teacher)
        self.cached_logits: Tensor | None = None  # (N_train, K), set in on_fit_start when the cache applies

    def _load_teacher(self, path: str) -> nn.Module:
        # Shifted views are filled as this stage's data pads its crops (the teacher's data: same
        # dataset, same normalization), also for teachers saved before the fill was recorded.
        trained = load_trained(path, tta=self.hparams.teacher_tta, fill=self.hparams.tta_fill)
        hp = trained.hparams
        expected_shape = tuple(self.hparams.input_shape)
        if hp["num_classes"] != self.hparams.num_classes:
            raise UsageError(f"teacher {path} predicts {hp['num_classes']} classes but the data has "
                             f"{self.hparams.num_classes}")
        if tuple(hp["input_shape"]) != expected_shape:
            raise UsageError(f"teacher {path} takes inputs of shape {tuple(hp['input_shape'])} but the data has "
                             f"{expected_shape}")
        self.teacher_tta = trained.tta  # the views the teacher averages over
        self.teacher_fill = trained.fill
        teacher = trained.model
        teacher.requires_grad_(False)
        return self.to_memory_format(teacher).eval()

    def mirrored_views(self) -> list[str]:
        return super().mirrored_views() + ([f"teacher_tta={self.teacher_tta}"] if mirrors(self.teacher_tta) else [])

    def train(self, mode: bool = True) -> "DistillModule":
        super().train(mode)
        self.teacher.eval()  # BatchNorm statistics and dropout of the teacher never switch to training
        return self

    def on_fit_start(self) -> None:
        self.cached_logits = None
        data = self.trainer.datamodule
        if not self.distiller.needs_teacher:
            rank_zero_info("teacher: not run (the method ignores it, e.g. alpha=0)")
            return
        why = None
        if not self.hparams.teacher_cache:
            why = "teacher_cache is off"
        elif data is None:
            why = "no DataModule says how the inputs are augmented"
        else:
            # A cached target serves every view of an image that the teacher cannot tell apart.
            varying = data.random_transforms() - getattr(self.teacher, "invariant_to", frozenset())
            if varying:
                why = (f"inputs are randomly augmented ({', '.join(sorted(varying))}) "
                       "and the teacher's output varies with it")
        if why is not None:
            rank_zero_info(f"teacher: online, run under no_grad on every training batch ({why})")
            return
        self.cached_logits = self._cached_teacher_logits(data).to(self.device)

    def _cached_teacher_logits(self, data: Any) -> Tensor:
        views = describe(self.teacher_tta, self.teacher_fill)
        path = teacher_cache.cache_path(self.hparams.teacher_ckpt, f"{data.fingerprint()}|tta={views}")
        start = time.perf_counter()
        # Built once, by one process; every process then reads the same file.
        if self.trainer.is_global_zero and teacher_cache.load(path) is None:
            batches = ((self.to_memory_format(data.transform(images.to(self.device), train=False)), indices)
                       for images, indices in data.training_images())
            teacher_cache.save(teacher_cache.compute_logits(self.teacher, batches, data.num_training_images(),
                                                            self.device), path)
            verb = "computed"
        else:
            verb = "loaded"
        self.trainer.strategy.barrier("teacher_cache")
        table = teacher_cache.load(path)
        if table is None or len(table) != data.num_training_images():
            raise UsageError(f"teacher logits cache {path} is unreadable; delete it and run again")
        rank_zero_info(f"teacher: cached logits {verb} in {time.perf_counter() - start:.1f} s ({path}); "
                       "looked up by index, the teacher does not run during training")
        return table

    def training_losses(self, images: Tensor, labels: Tensor, indices: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        student = Outputs(self.model(images))
        teacher = None
        if self.cached_logits is not None:
            teacher = Outputs(self.cached_logits[indices])  # (B, K)
        elif self.distiller.needs_teacher:
            teacher = Outputs(self.teacher_logits(images))
        return student.logits, self.distiller(student, teacher, labels)

    def teacher_logits(self, images: Tensor) -> Tensor:
        """The frozen teacher's logits (B, K), float32, without autograd history."""
        # no_grad rather than inference_mode: inference tensors cannot take part in autograd.
        # Without teacher_bf16 the surrounding precision (e.g. Lightning's bf16-mixed) applies unchanged.
        bf16 = torch.autocast(images.device.type, dtype=torch.bfloat16) if self.hparams.teacher_bf16 else nullcontext()
        with torch.no_grad(), bf16:
            return self.teacher(images).float()

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
