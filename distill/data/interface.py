"""What a training system, the teacher cache and the evaluation may ask of a DataModule.

A DataModule (a ``LightningDataModule``) serves ``(inputs, labels, indices)`` batches and, beside
its loaders, answers the questions below. ``ImageDataModule`` implements them; a new kind of data
(tabular rows, text) implements them too and needs no change to the training systems, the cache
or ``distill.evaluate``. Register it in ``distill.data.DATA_MODULES`` so that a checkpoint can
name it and ``distill.evaluate`` can rebuild it from the checkpoint's saved arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor

from distill.errors import UsageError


@runtime_checkable
class DistillData(Protocol):
    """The data interface of every stage (a structural type: no base class to inherit).

    Batches of the loaders are ``(inputs, labels, indices)``: ``indices`` (B,) point into the
    full training split (training and validation parts), so per-sample values computed once
    from ``training_inputs`` (cached teacher outputs) can be looked up by a batch.

    Two optional members describe a regression target (float labels, one output): ``task``
    (``"regression"``) and ``target_scale`` (mean, std); see ``task_of`` and ``target_scale_of``.
    """

    @property
    def batch_size(self) -> int:
        """Training batch size per device (the effective batch size and linear LR scaling read it)."""
        ...

    @property
    def num_classes(self) -> int:
        """Classes the labels take (a classifier's output width; 1 for regression, see ``task_of``)."""
        ...

    @property
    def class_names(self) -> tuple[str, ...]:
        """A name per class, in label order (reports and plots); empty when the data has none."""
        ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model-ready input, without the batch dimension, e.g. (C, H, W)."""
        ...

    @property
    def mirror_keeps_class(self) -> bool:
        """Whether a left-right mirrored input keeps its class (test-time flips are refused otherwise)."""
        ...

    @property
    def border_fill(self) -> tuple[float, ...] | None:
        """Per-channel model-ready value of the border a shifted input shows (None: repeat the edge)."""
        ...

    def random_transforms(self) -> frozenset[str]:
        """Names of the random transforms training inputs go through (``crop``, ``hflip``; empty: none).

        A teacher's outputs can be cached only when it is invariant to all of them.
        """
        ...

    def fingerprint(self) -> str:
        """Identifies the training inputs a model sees (content and preprocessing), for caches keyed on them."""
        ...

    def num_training_samples(self) -> int:
        """Size of the full training split that batch ``indices`` point into."""
        ...

    def training_inputs(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The full training split in order, model-ready and unaugmented: ``(inputs (B, ...), indices (B,))``.

        Batches have the evaluation batch size; inputs are on the CPU or on the device the data lives on.
        """
        ...

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The test split, model-ready, each sample exactly once: ``(inputs (B, ...), labels (B,))``."""
        ...


def task_of(data: object) -> str:
    """The data's ``task``: ``classification`` (integer labels) or ``regression`` (float targets, one output).

    An optional member of the interface: a DataModule without it is classification.
    """
    return str(getattr(data, "task", "classification"))


def target_scale_of(data: object) -> tuple[float, float] | None:
    """Regression: the data's ``target_scale``, mean and standard deviation of the training targets,
    which the network learns z-scored. An optional member of the interface (None: unscaled)."""
    scale = getattr(data, "target_scale", None)
    return None if scale is None else (float(scale[0]), float(scale[1]))


def check_data(data: object) -> None:
    """Refuses, before training, a DataModule that does not answer ``DistillData``.

    Raises:
        UsageError: naming the DataModule and the members it lacks.
    """
    members = [name for name in dir(DistillData) if not name.startswith("_") and name != "check_data"]
    missing = [name for name in members if not hasattr(data, name)]
    if missing:
        raise UsageError(f"{type(data).__name__} lacks {', '.join(missing)} of distill.data.DistillData "
                         "(distill/data/interface.py)")
