"""The frozen teacher as one object: its network(s), its views of the inputs, and who it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.data.split import SAME_TABLE_SPLIT, same_table, split_difference
from distill.errors import UsageError
from distill.models import count_parameters
from distill.models.ensemble import Ensemble
from distill.models.row_view import RowView, row_view
from distill.models.teacher_view import TeacherView, as_trained
from distill.models.tta import average_logits, describe, invariances, mirrors, with_tta
from distill.teacher.onnx_teacher import OnnxTeacher
from distill.teacher.sources import file_digest, state_digest


@dataclass(frozen=True)
class Origin:
    """Where one teacher network came from (plain values, for reports and cache keys)."""

    spec: str  # what the user typed (or the class of an object passed in Python)
    kind: str  # checkpoint, registry, torchvision, timm, import, program or object
    file: Path | None  # the checkpoint or weights file: caches are kept beside it
    data: dict[str, Any] | None = field(default=None, compare=False)  # a checkpoint's data settings (its fit)

    @property
    def fitted(self) -> dict[str, Any] | None:
        """A table teacher's fitted preprocessing, as its checkpoint recorded it."""
        return (self.data or {}).get("fitted")


class Teacher(nn.Module):
    """A frozen teacher: inputs as the data gives them (B, ...) -> logits (B, K) under its views.

    One network, or several combined (``Ensemble``); each behind the adapters it needs
    (``TeacherView``). The teacher is frozen here and only here: no parameter requires grad and
    ``train()`` leaves it in eval mode, whoever calls it.

    Args:
        network: The adapted network, or an ``Ensemble`` of them.
        origins: Where each member came from (one entry for a single teacher).
        tta: The views its logits are averaged over (a key of ``distill.models.tta.TTA_VIEWS``).
        num_classes: K, the width of its logits.
    """

    def __init__(self, network: nn.Module, origins: Sequence[Origin], tta: str, num_classes: int) -> None:
        super().__init__()
        self.network = network
        self.origins = tuple(origins)
        self.tta = tta
        self.num_classes = num_classes
        self.fill: tuple[float, ...] | None = None  # border of shifted views: the data's, set by attach
        self.requires_grad_(False)
        self.eval()

    # --- what it is ---------------------------------------------------------------------------------
    @property
    def is_ensemble(self) -> bool:
        return isinstance(self.network, Ensemble)

    @property
    def spec(self) -> str:
        """As reports name it: the spec typed, or ``[a, b]`` for several."""
        specs = [o.spec for o in self.origins]
        return specs[0] if len(specs) == 1 else f"[{', '.join(specs)}]"

    @property
    def kind(self) -> str:
        return self.origins[0].kind if len(self.origins) == 1 else "ensemble"

    @property
    def file(self) -> Path | None:
        """The first member's checkpoint or weights file, if any."""
        return next((o.file for o in self.origins if o.file is not None), None)

    @property
    def members(self) -> list[nn.Module]:
        """Each adapted network (one for a single teacher)."""
        return list(self.network.members) if isinstance(self.network, Ensemble) else [self.network]

    @property
    def num_params(self) -> int:
        """Its parameters (an ONNX or tree member: the numbers its graph holds)."""
        return count_parameters(self.network)

    def identity(self) -> str:
        """What the teacher computes, for cache keys: a checkpoint's bytes, or spec, adapters and weights.

        Several teachers: every one's identity, not how they are combined (a cached row holds each one's logits).
        """
        identities = [_identity(origin, member) for origin, member in zip(self.origins, self.members)]
        return identities[0] if len(identities) == 1 else "ensemble|" + "|".join(identities)

    def views(self) -> str:
        """The exact view set the logits average over: its name and its border."""
        return describe(self.tta, self.fill)

    def invariances(self) -> frozenset[str]:
        """Random transforms of the inputs that leave the teacher's logits unchanged."""
        return invariances(self.tta)

    def cache_dir(self, otherwise: str | Path) -> Path:
        """Where cached outputs go: beside its checkpoint or weights file, else ``otherwise``."""
        return self.file.parent if self.file is not None else Path(otherwise)

    def report(self) -> dict[str, Any]:
        """What ``metrics.json`` says of the teacher (plain values)."""
        out: dict[str, Any] = {"teacher": self.spec, "teacher_kind": self.kind,
                               "teacher_ckpt": self.spec if self.kind == "checkpoint" else None,
                               "teacher_digest": file_digest(self.file) if self.kind == "onnx" and self.file
                               else state_digest(self.network)}
        if isinstance(self.network, Ensemble):
            out.update(teacher_members=[o.spec for o in self.origins], teacher_ensemble=self.network.combine,
                       teacher_ensemble_temperature=self.network.temperature)
        return {**out, "teacher_params": self.num_params, "teacher_tta": self.tta}

    # --- the data it reads --------------------------------------------------------------------------
    def attach(self, data: Any) -> None:
        """Takes what the data says of its inputs: its normalization (undone by adapters), a table's fitted
        preprocessing (re-encoded for a teacher fitted otherwise), its border fill.

        Raises:
            UsageError: an adapter needs a normalization the data does not state, a table teacher's rows
                cannot be re-encoded from the data's, or mirrored views on data whose mirror changes the class.
        """
        self._match_rows(data)
        self._match_normalization(data)
        for module in self.network.modules():  # an ONNX teacher reads class-keyed scores by the data's names
            if isinstance(module, OnnxTeacher):
                module.set_classes(getattr(data, "class_names", ()) or ())
        for view in (m for m in self.network.modules() if isinstance(m, TeacherView) and m.normalize is not None):
            normalization = getattr(data, "normalization", None)
            if normalization is None:
                raise UsageError(f"teacher_normalize: {type(data).__name__} does not say how its inputs are "
                                 "normalized (a normalization property)")
            view.set_data_normalization(*normalization)
        if mirrors(self.tta) and not getattr(data, "mirror_keeps_class", True):
            raise UsageError(f"teacher_tta={self.tta}: a mirrored input of this data does not keep its "
                             "class; use a view set without flips")
        fill = getattr(data, "border_fill", None)  # a plain DataModule: repeat the edge
        self.fill = None if fill is None else tuple(fill)

    def _match_rows(self, data: Any) -> None:
        """A table teacher fitted otherwise than the data's rows reads them as its own fit writes them
        (``RowView``); refused in one line where the rows cannot be turned back."""
        for i, origin in enumerate(self.origins):
            if isinstance(self.members[i], RowView):
                continue  # attached already
            difference = split_difference(origin.data or {}, data, SAME_TABLE_SPLIT) if same_table(
                origin.data or {}, data) else None
            if difference is not None:  # its training rows would be among the student's test rows
                key, there, here = difference
                raise UsageError(f"teacher {origin.spec} was trained on another split of this table ({key}: {there!r} "
                                 f"there, {here!r} here): rows it learned from would be the student's test rows; "
                                 f"give --data.{key} {there}")
            try:
                view = row_view(self.members[i], origin.data, data)
            except UsageError as error:
                difference = fit_difference(origin.data or {}, dict(getattr(data, "hparams", {})), origin.fitted or {},
                                            getattr(data, "fitted", None) or {})
                raise UsageError(f"teacher {origin.spec} was trained on rows preprocessed otherwise ({difference}) "
                                 f"and cannot read these: {error}; give the student's --data the teacher's settings"
                                 ) from None
            self._replace_member(i, view)

    def _replace_member(self, i: int, view: nn.Module) -> None:
        if view is self.members[i]:
            return
        view.requires_grad_(False)
        if isinstance(self.network, Ensemble):
            self.network.members[i] = view
        else:
            self.network = view
        self.eval()

    def _match_normalization(self, data: Any) -> None:
        """A checkpoint teacher whose images were normalized otherwise than the data's gets them as it was
        trained: the data's normalization undone, its own applied (``TeacherView``). Equal ones: untouched."""
        own = getattr(data, "normalization", None)
        for i, origin in enumerate(self.origins):
            member = self.members[i]
            if isinstance(member, TeacherView):
                continue  # adapters the user asked for, or adapted already
            self._replace_member(i, as_trained(member, origin.data, own))

    # --- what it computes ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # BatchNorm statistics and dropout of a teacher never switch to training

    @torch.no_grad()
    def rows(self, inputs: Tensor) -> Tensor:
        """Logits (B, K) under the views, or every member's side by side (B, n*K): what a cache stores."""
        if isinstance(self.network, Ensemble):
            members = [average_logits(m, inputs, self.tta, self.fill) for m in self.network.members]
            return torch.cat([m.float() for m in members], dim=1)
        return average_logits(self.network, inputs, self.tta, self.fill)

    def from_rows(self, rows: Tensor) -> Tensor:
        """Rows (B, K + ...) or (B, n*K) -> the teacher's logits (B, K), several members combined."""
        if isinstance(self.network, Ensemble):
            return self.network.combined(rows.float().view(len(rows), len(self.network.members), -1))
        return rows[:, :self.num_classes]

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> Tensor:
        """Inference: (B, ...) -> the logits it teaches with (B, K), views averaged, members combined."""
        return self.from_rows(self.rows(inputs))

    def member_classifiers(self) -> list[nn.Module]:
        """Each member as a classifier under the teacher's views (for its own test figures)."""
        return [with_tta(member, self.tta, self.fill) for member in self.members]


SETTINGS = ("path", "dataset", "target", "numeric", "categorical", "drop", "split_seed", "val_fraction",
            "test_fraction", "impute", "missing_indicator", "encoding", "scaling", "reduction", "n_components")


def fit_difference(teacher_data: dict[str, Any], student_data: dict[str, Any], teacher: dict[str, Any],
                   student: dict[str, Any]) -> str:
    """In words, the first ways two tables' preprocessing differ: the data settings, else the fitted values."""
    named = [f"{key}: {teacher_data.get(key)!r} for the teacher, {student_data.get(key)!r} here" for key in SETTINGS
             if key in teacher_data and teacher_data.get(key) != student_data.get(key)]
    named = named or [f"{key}: {teacher.get(key)!r} for the teacher, {student.get(key)!r} here"
                      for key in sorted(set(teacher) | set(student))
                      if not isinstance(teacher.get(key), (list, dict)) and teacher.get(key) != student.get(key)]
    if named:
        return "; ".join(named[:2])
    fitted = [key for key in sorted(set(teacher) | set(student)) if teacher.get(key) != student.get(key)]
    return f"{', '.join(fitted[:3])} fitted on other rows (a changed file?)"


def _identity(origin: Origin, network: nn.Module) -> str:
    if origin.kind == "checkpoint" and not isinstance(network, (TeacherView, RowView)):
        return file_digest(origin.spec)  # a checkpoint's bytes: caches made before stay valid
    adapters = network.describe() if hasattr(network, "describe") else "none"  # adapters, an ONNX file's bytes
    if isinstance(network, TeacherView) and network.normalize is not None:
        adapters += f",data_mean={network.data_mean.flatten().tolist()},data_std={network.data_std.flatten().tolist()}"
    adapters += "".join(f"|{m.describe()}" for m in network.modules() if isinstance(m, OnnxTeacher) and m is not network)
    return f"{origin.spec}|{adapters}|{state_digest(network)}"
