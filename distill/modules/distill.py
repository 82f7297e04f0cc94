"""Stage two: a student trained against a frozen teacher."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from distill.errors import UsageError
from distill.features import FeatureRecorder, probe_shapes
from distill.losses import DISTILLERS, KD, Distiller, Outputs, RegressionKD, method_name
from distill.models import NetworkOrName, count_parameters
from distill.models.ensemble import Ensemble
from distill.models.teacher_view import TeacherView
from distill.models.tta import average_logits, check_tta, describe, invariances, mirrors, with_tta
from distill.modules.classifier import ClassifierSystem
from distill.teacher_cache import TeacherCache, file_digest
from distill.teacher_spec import adapt_teacher, load_teacher, state_digest

TEACHER_PREFIX = "teacher."


class DistillModule(ClassifierSystem):
    """Trains ``model`` (the student) with a distillation method against a frozen teacher.

    The teacher is frozen here and only here: no parameter requires grad, it stays in eval
    mode through ``train()`` calls, runs under ``torch.no_grad()``, and its weights are left out
    of this stage's checkpoints (they are reloaded from ``teacher_ckpt``).

    The method is built with the networks: its ``build`` gets the probed shapes of the features it
    asked for, before the optimizer exists, so its learnable parts are trained and checkpointed.

    Args:
        model: Student architecture name from the registry (from Python: also an ``nn.Module``).
        teacher: Where the teacher comes from (``distill.teacher_spec``): a distill checkpoint
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
        teacher_ensemble: With several teachers (a list for ``teacher``): combine them by the mean of
            their probabilities at ``teacher_ensemble_temperature`` (Hinton et al. 2015) or the
            mean of their logits. The cache keeps each teacher's logits and combines them at loss
            time, so changing these two settings reuses it.
        teacher_ensemble_temperature: T of the probability average.
        method: The distillation method with its settings, e.g. ``--model.method dkd
            --model.method.beta 2`` (``--model.method.help dkd`` lists them; ``distill.losses.DISTILLERS``
            the names). None: Hinton KD with its defaults (regression: ``regression_kd``).
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
            running the teacher (``distill.teacher_cache.TeacherCache``).
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
        teacher_ensemble: Literal["probabilities", "logits"] = "probabilities",
        teacher_ensemble_temperature: float = 4.0,
        method: Distiller | None = None,
        teacher_tta: str | None = None,
        teacher_cache: bool = True,
        teacher_cache_dtype: Literal["float32", "float16"] = "float32",
        teacher_bf16: bool = False,
        **kwargs: Any,
    ) -> None:
        if teacher_tta is not None:
            check_tta(teacher_tta)
        if teacher is not None and teacher_ckpt is not None and teacher != teacher_ckpt:
            raise UsageError("give the teacher once: --model.teacher or --model.teacher_ckpt, not both")
        if teacher is None and teacher_ckpt is None:
            raise UsageError("the student stage needs a teacher: --model.teacher SPEC (or --model.teacher_ckpt PATH)")
        self._teacher_given = {"teacher": teacher if teacher is not None else teacher_ckpt}
        super().__init__(model=model, **kwargs)
        self.distiller = method if method is not None else (RegressionKD() if self.regression else KD())
        if self.hparams.task not in self.distiller.tasks:
            fitting = [n for n in DISTILLERS.names() if self.hparams.task in DISTILLERS.get(n).tasks]
            raise UsageError(f"the {method_name(self.distiller)} method is for {' or '.join(self.distiller.tasks)}; "
                             f"this data is {self.hparams.task}: --model.method {' or '.join(fitting)}")
        # The method as plain values: what ran is readable from any checkpoint without importing code.
        self.hparams["method"] = method_name(self.distiller)
        self.hparams["method_settings"] = self.distiller.settings()
        self.teacher, teacher_hparams = self._load_teachers(self._teacher_given["teacher"])
        self.teacher_params = count_parameters(self.teacher)
        if self.num_params > self.teacher_params:
            rank_zero_warn(f"the student {self.hparams.model} ({self.num_params:,} parameters) is larger than its "
                           f"teacher ({self.teacher_params:,}, {self.num_params / self.teacher_params:.1f}x): "
                           "distillation usually compresses; check --model.model and --model.teacher")
        self.teacher_tta = teacher_tta or teacher_hparams.get("tta", "none")  # stages once recorded their own
        self.teacher_fill: tuple[float, ...] | None = None  # border of shifted views; the data's, set in setup
        self.student_recorder = self._recorder(self.model, self.distiller.student_features, detach=False)
        self.teacher_recorder = self._recorder(self.teacher, self.distiller.teacher_features, detach=True)
        self._build_method()
        self.cached_logits: Any = None  # a LogitTable, set by TeacherCache when it serves this run

    def hyperparameters_kept_apart(self) -> list[str]:
        given = self._teacher_given["teacher"]
        objects = any(isinstance(g, nn.Module) for g in (given if isinstance(given, list | tuple) else [given]))
        return [*super().hyperparameters_kept_apart(), "method", *(["teacher", "teacher_ckpt"] if objects else [])]

    def report_metrics(self) -> dict[str, Any]:
        return {**super().report_metrics(), "teacher": self.teacher_spec, "teacher_kind": self.teacher_kind,
                "teacher_ckpt": self.teacher_spec if self.teacher_kind == "checkpoint" else None,
                "teacher_digest": state_digest(self.teacher),
                **({"teacher_members": self.teacher_member_specs, "teacher_ensemble": self.teacher.combine,
                    "teacher_ensemble_temperature": self.teacher.temperature} if isinstance(self.teacher, Ensemble) else {}),
                "teacher_params": self.teacher_params, "method": self.hparams.method,
                "method_settings": self.hparams.method_settings, "teacher_tta": self.teacher_tta}

    @property
    def distills(self) -> bool:
        return True

    def _load_teachers(self, given: Any) -> tuple[nn.Module, dict[str, Any]]:
        """One teacher, or several as an ``Ensemble`` (each checked as one teacher is)."""
        if not isinstance(given, list | tuple):
            return self._load_teacher(given)
        if not given:
            raise UsageError("--model.teacher: the list of teachers is empty")
        if len(given) > 1 and self.distiller.teacher_features:
            raise UsageError(f"the {self.hparams.method} method reads a teacher's features: it learns from one teacher, "
                             f"not {len(given)}")
        if len(given) > 1 and self.regression and self.hparams.teacher_ensemble != "logits":
            raise UsageError("several regression teachers are averaged: --model.teacher_ensemble logits "
                             "(the mean of their predictions)")
        if len(given) > 1 and (self.hparams.teacher_weights or self.hparams.teacher_kwargs):
            raise UsageError("--model.teacher_weights and --model.teacher_kwargs describe one teacher; several "
                             "teachers are given as checkpoints (or registry:/import: specs without them)")
        members, recorded, specs, identities = [], [], [], []
        for spec in given:
            member, hparams = self._load_teacher(spec)
            members.append(member)
            recorded.append(hparams)
            specs.append(self.teacher_spec)
            identities.append(self._identity(self.teacher_kind, self.teacher_spec, member))
        if len(members) == 1:
            return members[0], recorded[0]
        self.teacher_spec, self.teacher_kind = f"[{', '.join(specs)}]", "ensemble"
        self.teacher_file = next((Path(s) for s in specs if Path(s).is_file()), self.teacher_file)
        self._member_identities, self.teacher_member_specs = identities, specs
        if any(isinstance(g, nn.Module) for g in given):
            self.hparams["teacher"] = self.teacher_spec  # the objects themselves are not hyperparameters
        tta = {h.get("tta", "none") for h in recorded}
        ensemble = Ensemble(members, self.hparams.teacher_ensemble, self.hparams.teacher_ensemble_temperature)
        return ensemble, ({"tta": tta.pop()} if len(tta) == 1 else {})

    def _load_teacher(self, spec: str | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """The frozen teacher, behind the adapters asked for, checked by a dry forward on the data's shape."""
        hp = self.hparams
        shape, classes = tuple(hp.input_shape), hp.num_classes
        loaded = load_teacher(spec, classes, shape[0], hp.teacher_kwargs, hp.teacher_weights, hp.teacher_trust_code)
        self.teacher_spec, self.teacher_kind, self.teacher_file = loaded.spec, loaded.kind, loaded.file
        if loaded.kind == "object":
            self.hparams["teacher"] = loaded.spec  # the object itself is not a hyperparameter
        teacher = adapt_teacher(loaded, shape, classes, hp.teacher_input_size, hp.teacher_normalize, hp.teacher_output)
        teacher = self.to_memory_format(teacher).eval()
        return teacher, loaded.hparams

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
        teacher_features = {name: shape for name, shape in shapes[1].items() if name != "logits"}
        # Per-sample vectors (pooled features) are small enough to cache beside the logits; spatial maps are not.
        self.cached_feature_widths: dict[str, int] | None = (
            {name: shape[1] for name, shape in teacher_features.items()}
            if all(len(shape) == 2 for shape in teacher_features.values()) else None)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if data is None:
            return
        if isinstance(self.teacher, TeacherView) and self.teacher.normalize is not None:
            normalization = getattr(data, "normalization", None)
            if normalization is None:
                raise UsageError(f"teacher_normalize: {type(data).__name__} does not say how its inputs are "
                                 "normalized (a normalization property)")
            self.teacher.set_data_normalization(*normalization)
        if mirrors(self.teacher_tta) and not getattr(data, "mirror_keeps_class", True):
            raise UsageError(f"teacher_tta={self.teacher_tta}: a mirrored input of this data does not keep its "
                             "class; use a view set without flips")
        self.teacher_fill = getattr(data, "border_fill", None)  # a plain DataModule: repeat the edge

    def train(self, mode: bool = True) -> "DistillModule":
        super().train(mode)
        self.teacher.eval()  # BatchNorm statistics and dropout of the teacher never switch to training
        return self

    def teacher_views(self) -> str:
        """The exact function the teacher computes on an input: its view set and their border."""
        return describe(self.teacher_tta, self.teacher_fill)

    def teacher_identity(self) -> str:
        """What the teacher is, for cache keys: a checkpoint's bytes, or the spec, adapters and weights.

        Several teachers: every one's identity, not how they are combined (the table holds each one's logits).
        """
        if isinstance(self.teacher, Ensemble):
            return "ensemble|" + "|".join(self._member_identities)
        return self._identity(self.teacher_kind, self.teacher_spec, self.teacher)

    @staticmethod
    def _identity(kind: str, spec: str, teacher: nn.Module) -> str:
        if kind == "checkpoint" and not isinstance(teacher, TeacherView):
            return file_digest(spec)  # kept as before: existing caches stay valid
        adapters = teacher.describe() if isinstance(teacher, TeacherView) else "none"
        if isinstance(teacher, TeacherView) and teacher.normalize is not None:
            adapters += f",data_mean={teacher.data_mean.flatten().tolist()},data_std={teacher.data_std.flatten().tolist()}"
        return f"{spec}|{adapters}|{state_digest(teacher)}"

    def teacher_cache_dir(self) -> Path:
        """Where the teacher's cached logits go: beside its checkpoint or weights file, else in the run directory."""
        if self.teacher_file is not None:
            return self.teacher_file.parent
        return Path(self.trainer.default_root_dir)

    def teacher_invariances(self) -> frozenset[str]:
        """Random transforms of the inputs that leave the teacher's logits unchanged."""
        return invariances(self.teacher_tta)

    def teacher_members(self) -> list[nn.Module]:
        """Each teacher as a classifier, under ``teacher_tta``'s views (one entry for a single teacher)."""
        networks = list(self.teacher.members) if isinstance(self.teacher, Ensemble) else [self.teacher]
        return [with_tta(network, self.teacher_tta, self.teacher_fill) for network in networks]

    def teacher_as_classifier(self) -> nn.Module:
        """The teacher as it teaches, as one module: ``teacher_classifier``'s function."""
        members = self.teacher_members()
        if not isinstance(self.teacher, Ensemble):
            return members[0]
        return Ensemble(members, self.teacher.combine, self.teacher.temperature)

    def teacher_table_columns(self) -> str:
        """What a cached row holds, for the cache key: the logits, and the teacher features a method reads."""
        features = self.distiller.teacher_features
        return "logits" + "".join(f"+{name}:{self.cached_feature_widths[name]}" for name in features) \
            if features and self.cached_feature_widths is not None else "logits"

    @torch.no_grad()
    def teacher_logit_rows(self, inputs: Tensor) -> Tensor:
        """The teacher's logits (B, K) under its views, or every teacher's side by side (B, n*K)."""
        if isinstance(self.teacher, Ensemble):
            members = [average_logits(m, inputs, self.teacher_tta, self.teacher_fill) for m in self.teacher.members]
            return torch.cat([m.float() for m in members], dim=1)
        return average_logits(self.teacher, inputs, self.teacher_tta, self.teacher_fill)

    @torch.no_grad()
    def teacher_table_rows(self, inputs: Tensor) -> Tensor:
        """What the teacher cache keeps per sample: ``teacher_logit_rows``, followed by the pooled teacher
        features the method reads when it reads any (B, K + D)."""
        if not self.distiller.teacher_features:
            return self.teacher_logit_rows(inputs)
        outputs = self.teacher_outputs(inputs)
        return torch.cat([outputs.logits, *(outputs.features[n].float() for n in self.distiller.teacher_features)], dim=1)

    def teacher_from_rows(self, rows: Tensor) -> Tensor:
        """Cached rows (B, K) or (B, n*K) -> the teacher's logits (B, K), several teachers combined."""
        if isinstance(self.teacher, Ensemble):
            return self.teacher.combined(rows.float().view(len(rows), len(self.teacher.members), -1))
        return rows[:, :self.hparams.num_classes]

    def teacher_outputs_from_rows(self, rows: Tensor) -> Outputs:
        """Cached rows -> the teacher's logits and the pooled features cached beside them (by name)."""
        features, start = {}, self.hparams.num_classes
        for name in self.distiller.teacher_features:
            width = self.cached_feature_widths[name]  # type: ignore[index]
            features[name] = rows[:, start:start + width].float()  # (B, D)
            start += width
        return Outputs(self.teacher_from_rows(rows).float(), features)

    @torch.no_grad()
    def teacher_classifier(self, inputs: Tensor) -> Tensor:
        """The frozen teacher's logits (B, K), averaged over ``teacher_tta``'s views (several teachers: combined)."""
        return self.teacher_from_rows(self.teacher_logit_rows(inputs))

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
            teacher = self.teacher_outputs_from_rows(self.cached_logits[indices])  # (B, K) and any (B, D) features
        elif self.distiller.needs_teacher:
            teacher = self.teacher_outputs(inputs)
        outputs = student.logits
        if self.regression:  # the method sees the z-scores the student learns, teacher and targets alike
            student = Outputs(self.standardized(student.logits), student.features)
            teacher = None if teacher is None else Outputs(self.standardized(teacher.logits), teacher.features)
            labels = self.standardized(labels)
        return outputs, self.distiller(student, teacher, labels)

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

