"""Several teachers at once: combined predictions, one cache of every teacher's logits, one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from distill.losses import KD, Outputs
from distill.models.ensemble import combine_logits
from distill.modules import DistillModule
from distill.train import main
from tests.conftest import FAST, fast


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher_b")
    assert main(["teacher", "--model.model", "cnn_small", "--run_dir", str(run_dir), "--seed_everything", "1",
                 *FAST]) == 0
    return run_dir


def test_probability_averaging_is_the_mean_of_the_softened_distributions():
    torch.manual_seed(0)
    members, t = torch.randn(5, 3, 7), 3.0
    combined = combine_logits(members, "probabilities", t)
    mean_probs = torch.softmax(members / t, dim=2).mean(dim=1)
    assert torch.allclose(torch.softmax(combined / t, dim=1), mean_probs, atol=1e-6)
    assert torch.allclose(combine_logits(members, "logits", t), members.mean(dim=1))


def test_two_identical_teachers_give_the_single_teacher_loss(teacher_run):
    ckpt = str(teacher_run / "best.ckpt")
    one = DistillModule(model="cnn_tiny", teacher=ckpt, num_classes=10, input_shape=(1, 28, 28))
    two = DistillModule(model="cnn_tiny", teacher=[ckpt, ckpt], num_classes=10, input_shape=(1, 28, 28),
                        teacher_ensemble_temperature=4.0)
    x, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    student = torch.randn(16, 10)
    method = KD(temperature=4.0, alpha=0.9)
    single = method(Outputs(student), Outputs(one.teacher(x)), labels)
    double = method(Outputs(student), Outputs(two.teacher(x)), labels)
    assert double["kd"].item() == pytest.approx(single["kd"].item(), abs=1e-7, rel=1e-6)
    assert two.teacher.num_params == 2 * one.teacher.num_params


def test_two_teachers_train_through_the_cli_on_one_cache_of_both(teacher_run, second_teacher, tmp_path, caplog):
    caplog.set_level("INFO")
    teachers = f"[{teacher_run / 'best.ckpt'}, {second_teacher / 'best.ckpt'}]"
    args = ["student", "--model.model", "cnn_tiny", "--model.teacher", teachers, *fast(limit_train_batches="2")]
    assert main([*args, "--run_dir", str(tmp_path / "a")]) == 0
    assert "cached logits computed" in caplog.text
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["teacher_kind"] == "ensemble" and len(metrics["teacher_members"]) == 2
    assert len(metrics["teacher_member_test_acc"]) == 2 and 0 <= metrics["teacher_test_acc"] <= 1
    caplog.clear()
    # Another way of combining them reads the same table: it holds each teacher's logits.
    assert main([*args, "--model.teacher_ensemble", "logits", "--run_dir", str(tmp_path / "b")]) == 0
    assert "cached logits loaded" in caplog.text


@pytest.mark.parametrize("extra, message", [
    (["--model.method", "fitnet"], "learns from one teacher, not 2"),
    (["--model.teacher_ensemble", "median"], "median"),
])
def test_bad_ensembles_are_one_line_errors(extra, message, teacher_run, second_teacher, tmp_path, capsys):
    teachers = f"[{teacher_run / 'best.ckpt'}, {second_teacher / 'best.ckpt'}]"
    code = main(["student", "--model.model", "cnn_tiny", "--model.teacher", teachers, *extra, *FAST,
                 "--run_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
