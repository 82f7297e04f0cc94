"""``build_teacher``: the one place a teacher is made, for training, pruning and every report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.errors import UsageError
from distill.models.ensemble import Ensemble
from distill.teacher.settings import TeacherSettings
from distill.teacher.sources import adapt_teacher, load_teacher
from distill.teacher.teacher import Origin, Teacher


def build_teacher(settings: TeacherSettings, num_classes: int, input_shape: Sequence[int],
                  task: str = "classification", reads_features: str | None = None) -> Teacher:
    """The frozen teacher ``settings`` describe, checked against the data it will read.

    Args:
        settings: Where it comes from and its adapters.
        num_classes: The data's classes (1 for a regression target).
        input_shape: One model-ready input of the data, (C, H, W) or (F,).
        task: The data's task name; several regression teachers must be averaged by their logits.
        reads_features: The name of the method, when it taps the teacher's intermediate features (one teacher only).

    Raises:
        UsageError: a teacher that cannot be built, or that does not fit the data or the method.
    """
    given = settings.members
    if len(given) > 1:
        if reads_features:
            raise UsageError(f"the {reads_features} method reads a teacher's features: it learns from one teacher, "
                             f"not {len(given)}")
        if task == "regression" and settings.ensemble != "logits":
            raise UsageError("several regression teachers are averaged: --model.teacher_ensemble logits "
                             "(the mean of their predictions)")
        if settings.weights or settings.kwargs:
            raise UsageError("--model.teacher_weights and --model.teacher_kwargs describe one teacher; several "
                             "teachers are given as checkpoints (or registry:/import: specs without them)")
    shape = tuple(input_shape)
    networks, origins, recorded = [], [], []
    for spec in given:
        loaded = load_teacher(spec, num_classes, shape[0], dict(settings.kwargs), settings.weights,
                              settings.trust_code, {"input_name": settings.input_name, "output": settings.output,
                                                    "scores": settings.scores})
        output = None if loaded.kind == "onnx" else settings.output  # an ONNX teacher picks its own output
        networks.append(adapt_teacher(loaded, shape, num_classes, settings.input_size, settings.normalize, output))
        origins.append(Origin(loaded.spec, loaded.kind, loaded.file, loaded.data_hparams))
        recorded.append(loaded.hparams.get("tta", "none") if loaded.hparams else "none")
    network = networks[0] if len(networks) == 1 else Ensemble(networks, settings.ensemble,
                                                              settings.ensemble_temperature)
    return Teacher(network, origins, settings.tta or recorded_views(recorded), num_classes)


def recorded_views(recorded: list[Any]) -> str:
    """The view set the teachers' own stages recorded, when they agree; else ``none``."""
    return recorded[0] if len(set(recorded)) == 1 else "none"
