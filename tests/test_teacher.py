"""The teacher as one object: built in one place from plain settings, frozen, knowing who it is."""

import dataclasses

import pytest
import torch

from distill.errors import UsageError
from distill.modules import DistillModule
from distill.teacher import Teacher, TeacherSettings, build_teacher
from distill.teacher import build as build_module
from distill.teacher.sources import file_digest


def test_a_checkpoint_teacher_is_frozen_and_keyed_by_its_bytes(teacher_run):
    ckpt = str(teacher_run / "best.ckpt")
    teacher = build_teacher(TeacherSettings(spec=ckpt), 10, (1, 28, 28))
    assert isinstance(teacher, Teacher) and teacher.kind == "checkpoint" and teacher.spec == ckpt
    assert teacher.identity() == file_digest(ckpt)  # caches written before the teacher package stay valid
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(teacher(x), teacher.network(x))  # no views: the network's own logits
    flipped = build_teacher(dataclasses.replace(TeacherSettings(spec=ckpt), tta="flip"), 10, (1, 28, 28))
    expected = (teacher.network(x) + teacher.network(x.flip(3))) / 2
    assert torch.allclose(flipped(x), expected, atol=1e-6) and flipped.invariances() == frozenset({"hflip"})


def test_a_students_recorded_settings_rebuild_the_same_teacher(teacher_run):
    student = DistillModule(model="cnn_tiny", teacher=str(teacher_run / "best.ckpt"), teacher_tta="flip",
                            num_classes=10, input_shape=(1, 28, 28))
    rebuilt = build_teacher(TeacherSettings.from_hparams(student.hparams), 10, (1, 28, 28))
    assert rebuilt.identity() == student.teacher.identity() and rebuilt.tta == student.teacher.tta == "flip"
    assert student.teacher.report()["teacher_params"] == rebuilt.num_params


def test_ensembles_are_checked_against_the_method_and_the_task(teacher_run):
    ckpt = str(teacher_run / "best.ckpt")
    two = TeacherSettings(spec=[ckpt, ckpt])
    with pytest.raises(UsageError, match="the at method reads a teacher's features: it learns from one teacher, not 2"):
        build_teacher(two, 10, (1, 28, 28), reads_features="at")
    with pytest.raises(UsageError, match="teacher_ensemble logits"):
        build_teacher(two, 10, (1, 28, 28), task="regression")
    pair = build_teacher(two, 10, (1, 28, 28))
    assert pair.is_ensemble and pair.kind == "ensemble" and pair.identity().startswith("ensemble|")
    with pytest.raises(UsageError, match="list of teachers is empty"):
        TeacherSettings(spec=[])


def test_the_prune_stage_builds_its_teacher_once_under_taylor(student_run, teacher_run, monkeypatch):
    from distill.modules.prune import PruneModule

    calls = []
    real = build_module.load_teacher
    monkeypatch.setattr(build_module, "load_teacher", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    module = PruneModule(source_ckpt=str(student_run / "best.ckpt"), importance="taylor", taylor_images=16,
                         teacher=str(teacher_run / "best.ckpt"), num_classes=10, input_shape=(1, 28, 28))
    assert calls == [str(teacher_run / "best.ckpt")]  # ranked the channels, then teaches: one load
    assert module.hparams["teacher"] == str(teacher_run / "best.ckpt") and module.hparams["model"] != "object"


def test_from_python_a_network_or_a_built_teacher_is_taken_and_recorded_by_name():
    import distill
    from distill.models import create_model

    network = create_model("cnn_tiny", num_classes=10, in_channels=1)
    teacher = distill.build_teacher(distill.TeacherSettings(spec=network), 10, (1, 28, 28))
    assert teacher.kind == "object" and teacher.spec.startswith("object:") and teacher.network is network
    student = distill.DistillModule(model="cnn_tiny", teacher=teacher, num_classes=10, input_shape=(1, 28, 28))
    assert student.teacher is teacher and student.hparams["teacher"] == teacher.spec  # a plain value, not the module
    assert distill.get_task("classification").default_method == type(student.distiller).__name__.lower()
