"""What a teacher is made from: one plain-valued description, saved with every student that learned from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from distill.errors import UsageError
from distill.models.tta import check_tta

TeacherGiven = str | nn.Module  # a spec (distill.teacher.sources) or, from Python, a network


@dataclass(frozen=True)
class TeacherSettings:
    """Where the teacher comes from and how the data's inputs reach it.

    The student stage's ``--model.teacher*`` flags are these fields (``teacher_`` dropped); a
    student's checkpoint records them as plain values, so ``from_hparams`` rebuilds the same
    teacher anywhere (``distill.evaluate``, the prune stage), importing code only from the spec.

    Attributes:
        spec: A distill checkpoint, ``registry:NAME``, ``torchvision:NAME``, ``timm:NAME``,
            ``import:package.module:factory``, an ONNX file (any framework's), a program file (with
            ``trust_code``), or from Python an
            ``nn.Module``; a list of them is an ensemble.
        kwargs: Arguments of a built teacher's factory (``num_classes`` defaults to the data's).
        weights: ``.safetensors`` or ``.pt``/``.pth`` state dict of a built teacher (never unpickled).
        trust_code: Allow a TorchScript or ``.pt2`` teacher, which runs code when loaded.
        input_size: Resize the teacher's view of each image to this side.
        normalize: Normalize the teacher's view as it was trained (``imagenet``) instead of as the data is.
        output: Picks the logits of a teacher returning a dict (key), tuple (index) or object (attribute);
            of an ONNX teacher, its output (name or index).
        input_name: The input of an ONNX teacher the data feeds (None: its only one).
        scores: What an ONNX teacher's output holds: ``logits``, ``probabilities`` or ``auto``.
        ensemble: How several teachers combine: mean of ``probabilities`` at ``ensemble_temperature``, or of ``logits``.
        ensemble_temperature: T of the probability average.
        tta: The views the teacher's logits are averaged over (``none``, ``flip``, ``flip_shift``);
            None: the view set the teacher's own stage recorded, else ``none``.
    """

    spec: TeacherGiven | tuple[TeacherGiven, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    weights: str | None = None
    trust_code: bool = False
    input_size: int | None = None
    normalize: str | None = None
    output: str | None = None
    input_name: str | None = None
    scores: Literal["auto", "logits", "probabilities"] = "auto"
    ensemble: Literal["probabilities", "logits"] = "probabilities"
    ensemble_temperature: float = 4.0
    tta: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.spec, list):
            object.__setattr__(self, "spec", tuple(self.spec))
        if isinstance(self.spec, tuple) and not self.spec:
            raise UsageError("--model.teacher: the list of teachers is empty")
        if self.tta is not None:
            check_tta(self.tta)

    @property
    def members(self) -> tuple[TeacherGiven, ...]:
        """Every teacher given, in order (one for a single teacher)."""
        return self.spec if isinstance(self.spec, tuple) else (self.spec,)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], spec: Any = None) -> "TeacherSettings":
        """The settings a student stage recorded (its ``teacher*`` hyperparameters); ``spec`` replaces its teacher."""
        given = spec if spec is not None else hparams.get("teacher") or hparams.get("teacher_ckpt")
        if given is None:
            raise UsageError("no teacher recorded: these hyperparameters are not a student's")
        return cls(spec=given, kwargs=dict(hparams.get("teacher_kwargs") or {}),
                   weights=hparams.get("teacher_weights"), trust_code=bool(hparams.get("teacher_trust_code", False)),
                   input_size=hparams.get("teacher_input_size"), normalize=hparams.get("teacher_normalize"),
                   output=hparams.get("teacher_output"), input_name=hparams.get("teacher_input"),
                   scores=hparams.get("teacher_scores", "auto"),
                   ensemble=hparams.get("teacher_ensemble", "probabilities"),
                   ensemble_temperature=hparams.get("teacher_ensemble_temperature", 4.0),
                   tta=hparams.get("teacher_tta"))
