import json

import pytest
import torch

from distill.evaluate import main, name_models
from tests.conftest import needs_fashion_mnist

pytestmark = needs_fashion_mnist

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_holds_every_model_and_valid_plots(teacher_run, student_run, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["--teacher", str(teacher_run / "best.ckpt"), "--student", str(student_run / "best.ckpt"),
                 str(student_run / "last.ckpt"), "--out_dir", str(out), "--latency_runs", "2"])
    assert code == 0
    report = json.loads((out / "compare.json").read_text())
    names = [m["name"] for m in report["models"]]
    assert len(names) == 3 and names[0] == teacher_run.name
    teacher, student = report["models"][0], report["models"][1]
    assert teacher["test_samples"] == 10000  # the full test set, each image once
    for key in ("acc", "top5", "f1", "per_class_f1", "auroc", "ece", "nll", "confusion", "params", "weights_bytes",
                "flops", "cpu"):
        assert key in student, key
    assert sum(map(sum, student["confusion"])) == 10000
    assert 0 <= student["agreement_with_teacher"] <= 1 and "agreement_with_teacher" not in teacher
    assert student["params"] == 29178 and teacher["params"] == 1442
    assert student["ratios"]["params"] == pytest.approx(29178 / 1442)
    assert student["ratios"]["accuracy_retained"] == pytest.approx(student["acc"] / teacher["acc"])
    assert student["cpu"]["latency_ms"] > 0 and student["cpu"]["throughput"] > 0
    # How it was distilled, as the stage ran it (the default recipe's KD settings).
    assert student["method"] == "kd" and student["method_settings"] == {"temperature": 2.0, "alpha": 0.9,
                                                                        "logit_standardize": False}
    markdown = (out / "compare.md").read_text()
    assert all(name in markdown for name in names)
    for figure in ("confusion.png", "reliability.png", "per_class_f1.png", "training_curves.png"):
        assert (out / figure).read_bytes().startswith(PNG), figure
    assert "Quality" in capsys.readouterr().out


def test_safetensors_export_loads_back_into_the_model(teacher_run, student_run, tmp_path):
    from safetensors.torch import load_file

    from distill.checkpoint import model_from_checkpoint

    code = main(["--teacher", str(teacher_run / "best.ckpt"), "--student", str(student_run / "best.ckpt"),
                 "--out_dir", str(tmp_path), "--latency_runs", "1", "--export_safetensors"])
    assert code == 0
    model, _ = model_from_checkpoint(student_run / "best.ckpt")
    weights = load_file(str(tmp_path / f"{student_run.name}.safetensors"))
    model.load_state_dict(weights)  # strict: every key, every shape
    assert json.loads((tmp_path / "compare.json").read_text())["models"][1]["safetensors"].endswith(".safetensors")


def test_teacher_is_evaluated_under_the_test_time_augmentation_it_taught_with(teacher_run, student_run, tmp_path):
    from safetensors.torch import load_file

    from distill.checkpoint import load_trained
    from distill.checkpoint import rebuild_data
    from distill.inference import test_outputs as test_logits
    from distill.models.tta import with_tta

    reports = {}
    for tta in ("none", "flip"):
        out = tmp_path / tta
        assert main(["--teacher", str(teacher_run / "best.ckpt"), "--student", str(student_run / "best.ckpt"),
                     "--out_dir", str(out), "--latency_runs", "1", "--teacher_tta", tta, "--export_safetensors"]) == 0
        reports[tta] = json.loads((out / "compare.json").read_text())["models"][0]
    plain, flipped = reports["none"], reports["flip"]
    assert plain["model"] == "cnn_tiny" and flipped["model"] == "cnn_tiny + flip TTA"
    trained = load_trained(teacher_run / "best.ckpt")
    data = rebuild_data(trained, None, 1000)
    logits, labels = test_logits(with_tta(trained.network, "flip", data.border_fill), data, torch.device("cpu"))
    assert flipped["acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert flipped["flops"] == 2 * plain["flops"] and flipped["params"] == plain["params"]  # two passes, one network
    trained.network.load_state_dict(load_file(flipped["safetensors"]))  # the network's own keys, strict


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["--teacher", str(tmp_path / "nope.ckpt"), "--out_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: checkpoint {tmp_path / 'nope.ckpt'} not found"


def test_checkpoints_of_different_datasets_are_refused(teacher_run, tmp_path, capsys):
    other = tmp_path / "other" / "best.ckpt"
    other.parent.mkdir()
    ckpt = torch.load(teacher_run / "best.ckpt", weights_only=True)
    ckpt["datamodule_hyper_parameters"]["dataset"] = "cifar10"
    torch.save(ckpt, other)
    code = main(["--teacher", str(teacher_run / "best.ckpt"), "--student", str(other), "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "differ in dataset" in err and "\n" not in err
    assert not (tmp_path / "compare.json").exists()


def test_bad_option_is_one_line(capsys):
    assert pytest.raises(SystemExit, main, ["--latency_runs", "x"]).value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_names_are_run_directories_made_unique(tmp_path):
    from pathlib import Path

    assert name_models([Path("a/teacher/best.ckpt"), Path("b/student/best.ckpt"), Path("c/student/best.ckpt")]) == [
        "teacher", "student", "student-2"]
