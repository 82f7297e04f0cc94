"""Stage two: a student trained against a frozen teacher."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from distill.errors import UsageError
from distill.features import FeatureRecorder, probe_shapes
from distill.losses import DISTILLERS, Distiller, Outputs, method_name
from distill.models import NetworkOrName
from distill.modules.classifier import ClassifierSystem
from distill.teacher import Teacher, TeacherSettings, build_teacher
from distill.teacher.cache import TableRequest, TeacherCache

TEACHER_PREFIX = "teacher."


class DistillModule(ClassifierSystem):
    """Trains ``model`` (the student) with a distillation method against a frozen teacher.

    The teacher is one object (``distill.teacher.Teacher``), built from the ``teacher*`` arguments
    by ``build_teacher``: frozen, in eval mode whatever ``train()`` says, run under
    ``torch.no_grad()``; its weights are left out of this stage's checkpoints (rebuilt from the
    recorded settings).

    The method is built with the networks: its ``build`` gets the probed shapes of the features it
    asked for, before the optimizer exists, so its learnable parts are trained and checkpointed.

    Args:
        model: Student architecture name from the registry (from Python: also an ``nn.Module``).
        teacher: Where the teacher comes from (``distill.teacher.sources``): a distill checkpoint
            (its architecture and layer widths are read from it), ``registry:NAME``,
            ``torchvision:NAME``, ``timm:NAME`` or ``import:package.module:factory`` (built, then
            filled from ``teacher_weights``); from Python, also an ``nn.Module``.
        teacher_ckpt: The same as ``teacher`` (the older name; give one of the two).
        teacher_kwargs: Arguments of a built teacher's factory, e.g. ``{"num_classes": 10}``
            (``num_classes`` defaults to the data's, ``in_channels`` of registry models too).
        teacher_weights: ``.safetensors`` or ``.pt``/``.pth`` state dict of a built teacher, read
            without unpickling; wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) stripped.
        teacher_trust_code: Allow a TorchScript or ``.pt2`` teacher, which runs code when loaded.
        teacher_input_size: Resize the teacher's view of each image to this side (bilinear).
        teacher_normalize: Normalize the teacher's view as it was trained (``imagenet``) instead of
            as the data is; grey images are repeated to three channels for a colour teacher.
        teacher_output: Picks the logits of a teacher returning a dict (a key), a tuple (an
            index) or an object (an attribute, e.g. ``logits``).
        teacher_input: An ONNX teacher's input that the data feeds (None: its only input).
        teacher_scores: What an ONNX teacher's output holds: ``logits``, ``probabilities`` (turned into
            log-probabilities) or ``auto`` (probabilities when its name says so).
        teacher_ensemble: With several teachers (a list for ``teacher``): combine them by the mean of
            their probabilities at ``teacher_ensemble_temperature`` (Hinton et al. 2015) or the
            mean of their logits. The cache keeps each teacher's logits and combines them at loss
            time, so changing these two settings reuses it.
        teacher_ensemble_temperature: T of the probability average.
        method: The distillation method with its settings, e.g. ``--model.method dkd
            --model.method.beta 2`` (``--model.method.help dkd`` lists them; ``distill.losses.DISTILLERS``
            the names). None: the task's default method (``kd``; regression: ``regression_kd``).
            ``--model.method.alpha 0`` trains the same student on labels alone, for every method
            that mixes in the labels.
        teacher_tta: Test-time augmentation of the teacher: ``none``, ``flip`` (the image and its
            mirror) or ``flip_shift`` (those and 1-pixel shifts in four directions, bordered as the
            data's training crop pads, 10 views): its logits averaged over those views of each
            image are the soft targets. None: the teacher's own stage's, if it recorded one.
        teacher_cache: When the student's inputs are not randomly augmented, or only by transforms
            the teacher is invariant to (flips, for a teacher averaged over mirrored views),
            compute the teacher's logits once per training sample (on disk beside the teacher
            checkpoint, keyed by its bytes and the data) and look them up by index instead of
            running the teacher (``distill.teacher.cache.TeacherCache``).
        teacher_cache_dtype: Storage type of that table: ``float32`` or ``float16`` (half the size).
        teacher_bf16: Run the online teacher under bfloat16 autocast (on a GPU: about half the
            teacher's cost; its logits are cast back to float32 for the loss).
        **kwargs: Everything ``ClassifierSystem`` takes (optimizer, schedule, regularization, ...).
    """

    def __init__(
        self,
        model: NetworkOrName,
        teacher: NetworkOrName | list[NetworkOrName] | None = None,
        teacher_ckpt: str | list[str] | None = None,
        teacher_kwargs: dict[str, Any] | None = None,
        teacher_weights: str | None = None,
        teacher_trust_code: bool = False,
        teacher_input_size: int | None = None,
        teacher_normalize: str | None = None,
        teacher_output: str | None = None,
        teacher_input: str | None = None,
        teacher_scores: Literal["auto", "logits", "probabilities"] = "auto",
        teacher_ensemble: Literal["probabilities", "logits"] = "probabilities",
        teacher_ensemble_temperature: float = 4.0,
        method: Distiller | None = None,
        teacher_tta: str | None = None,
        teacher_cache: bool = True,
        teacher_cache_dtype: Literal["float32", "float16"] = "float32",
        teacher_bf16: bool = False,
        **kwargs: Any,
    ) -> None:
        if teacher is not None and teacher_ckpt is not None and teacher != teacher_ckpt:
            raise UsageError("give the teacher once: --model.teacher or --model.teacher_ckpt, not both")
        given = teacher if teacher is not None else teacher_ckpt
        if given is None:
            raise UsageError("the student stage needs a teacher: --model.teacher SPEC (or --model.teacher_ckpt PATH)")
        super().__init__(model=model, **kwargs)
        if self.fitted_trees is not None:
            raise UsageError(f"{self.hparams.model} is fitted on rows, not trained by gradient steps: it can be a "
                             f"teacher (python -m distill.train teacher --model.model {self.hparams.model}), not a "
                             "student; a student is a network (e.g. mlp_small)")
        self.distiller = method if method is not None else DISTILLERS.get(self.task.default_method)()
        if self.task.name not in self.distiller.tasks:
            fitting = [n for n in DISTILLERS.names() if self.task.name in DISTILLERS.get(n).tasks]
            raise UsageError(f"the {method_name(self.distiller)} method is for {' or '.join(self.distiller.tasks)}; "
                             f"this data is {self.task.name}: --model.method {' or '.join(fitting)}")
        # The method as plain values: what ran is readable from any checkpoint without importing code.
        self.hparams["method"] = method_name(self.distiller)
        self.hparams["method_settings"] = self.distiller.settings()
        if isinstance(given, Teacher):  # built already (the prune stage ranks channels with it)
            built = given
        else:
            settings = TeacherSettings.from_hparams(self.hparams, spec=given)  # the teacher_* arguments
            built = build_teacher(settings, self.hparams.num_classes, tuple(self.hparams.input_shape), self.task.name,
                                  reads_features=self.hparams.method if self.distiller.teacher_features else None)
        self.teacher = self.to_memory_format(built)
        if "teacher" not in self.hparams or "teacher_ckpt" not in self.hparams:  # given as objects: recorded by spec
            self.hparams["teacher"], self.hparams["teacher_ckpt"] = self.teacher.spec, None
        if 0 < self.teacher.num_params < self.num_params:
            rank_zero_warn(f"the student {self.hparams.model} ({self.num_params:,} parameters) is larger than its "
                           f"teacher ({self.teacher.num_params:,}, {self.num_params / self.teacher.num_params:.1f}x): "
                           "distillation usually compresses; check --model.model and --model.teacher")
        self.student_recorder = self._recorder(self.model, self.distiller.student_features, detach=False)
        self.teacher_recorder = self._recorder(self.teacher.network, self.distiller.teacher_features, detach=True)
        self.cached_feature_widths = self._build_method()
        self.cached_logits: Any = None  # a LogitTable, set by TeacherCache when it serves this run
        self.fills_labels = False  # whether some training rows have no label (set from the data in setup)

    def report_metrics(self) -> dict[str, Any]:
        return {**super().report_metrics(), **self.teacher.report(), "method": self.hparams.method,
                "method_settings": self.hparams.method_settings}

    @property
    def distills(self) -> bool:
        return True

    @staticmethod
    def _recorder(network: nn.Module, names: tuple[str, ...], detach: bool) -> FeatureRecorder | None:
        # No names, no hooks: logit methods run the networks exactly as without this machinery.
        return FeatureRecorder(network, names, detach=detach) if names else None

    def _build_method(self) -> dict[str, int] | None:
        """Probes the shapes the method asked for (eval mode, no_grad) and lets it size its parts.

        Returns:
            The widths of the teacher features the method reads when all are per-sample vectors
            (pooled features, small enough to cache beside the logits); None for spatial maps.
        """
        shapes: list[dict[str, torch.Size]] = []
        for network, recorder in ((self.model, self.student_recorder), (self.teacher.network, self.teacher_recorder)):
            if recorder is None:
                shapes.append({"logits": torch.Size([2, self.hparams.num_classes])})
            else:
                logits, features = probe_shapes(network, recorder, self.hparams.input_shape)
                shapes.append({"logits": logits, **features})
        self.distiller.build(*shapes)
        teacher_features = {name: shape for name, shape in shapes[1].items() if name != "logits"}
        if all(len(shape) == 2 for shape in teacher_features.values()):
            return {name: shape[1] for name, shape in teacher_features.items()}
        return None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = self.trainer.datamodule
        if data is not None:
            self.teacher.attach(data)
        # Synthetic rows (--data.augment) carry no label: the teacher's answer stands in for it.
        self.fills_labels = getattr(data, "synthetic_rows", 0) > 0

    def table_request(self) -> TableRequest:
        """What the teacher cache keeps per training sample: the logits, and pooled features the method reads."""
        features = self.distiller.teacher_features
        unfit = None
        if features and self.cached_feature_widths is None:
            unfit = "the method reads the teacher's intermediate feature maps, too large to cache"
        columns = "logits"
        if features and self.cached_feature_widths is not None:
            columns += "".join(f"+{name}:{self.cached_feature_widths[name]}" for name in features)
        return TableRequest(self.teacher, columns, self._table_rows, self.distiller.needs_teacher, unfit)

    @torch.no_grad()
    def _table_rows(self, inputs: Tensor) -> Tensor:
        """A cached row per input: the teacher's logit rows, then the pooled features the method reads (B, K + D)."""
        inputs = self.to_memory_format(inputs)
        if not self.distiller.teacher_features:
            return self.teacher.rows(inputs)
        outputs = self.teacher_outputs(inputs)
        return torch.cat([outputs.logits, *(outputs.features[n].float() for n in self.distiller.teacher_features)], dim=1)

    def _outputs_from_rows(self, rows: Tensor) -> Outputs:
        """Cached rows -> the teacher's logits and the pooled features cached beside them (by name)."""
        features, start = {}, self.hparams.num_classes
        for name in self.distiller.teacher_features:
            width = self.cached_feature_widths[name]  # type: ignore[index]
            features[name] = rows[:, start:start + width].float()  # (B, D)
            start += width
        return Outputs(self.teacher.from_rows(rows).float(), features)

    def configure_callbacks(self) -> list[Callback]:
        return [TeacherCache(dtype=self.hparams.teacher_cache_dtype, enabled=self.hparams.teacher_cache)]

    def training_losses(self, inputs: Tensor, labels: Tensor, indices: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        if self.student_recorder is None:
            student = Outputs(self.model(inputs))
        else:
            with self.student_recorder:
                logits = self.model(inputs)
            student = Outputs(logits, self.student_recorder.pop())
        teacher = None
        if self.cached_logits is not None and indices is not None:
            teacher = self._outputs_from_rows(self.cached_logits[indices])  # (B, K) and any (B, D) features
        elif self.distiller.needs_teacher or self.fills_labels:
            teacher = self.teacher_outputs(inputs)
        if self.fills_labels:
            assert teacher is not None
            labels = self.task.teacher_labelled(labels, teacher.logits)
        outputs = student.logits
        # The method sees what the student learns (a regression's z-scores), teacher and targets alike.
        learned = self.task.learned
        student = Outputs(learned(student.logits, self.model), student.features)
        teacher = None if teacher is None else Outputs(learned(teacher.logits, self.model), teacher.features)
        return outputs, self.distiller(student, teacher, learned(labels, self.model))

    def teacher_outputs(self, inputs: Tensor) -> Outputs:
        """The frozen teacher's float32 logits (B, K) and the features the method asked for, without autograd history."""
        # no_grad rather than inference_mode: inference tensors cannot take part in autograd.
        # Without teacher_bf16 the surrounding precision (e.g. Lightning's bf16-mixed) applies unchanged.
        bf16 = torch.autocast(inputs.device.type, dtype=torch.bfloat16) if self.hparams.teacher_bf16 else nullcontext()
        recorder = self.teacher_recorder if self.teacher_recorder is not None else nullcontext()
        with torch.no_grad(), bf16, recorder:
            logits = self.teacher(inputs).float()
        features = self.teacher_recorder.pop() if self.teacher_recorder is not None else {}
        return Outputs(logits, features)

    def trainable_module(self) -> nn.Module:
        return nn.ModuleList([self.model, self.distiller])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]
        checkpoint["teacher_params"] = self.teacher.num_params

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # Resuming: the teacher is rebuilt from its settings, not read from this file; put it back for strict loading.
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state[TEACHER_PREFIX + key] = value
