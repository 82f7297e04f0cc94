"""python -m distill.compress end to end on the session's tiny teacher and student, and its bad input."""

from __future__ import annotations

import json

import pytest
import torch

from distill.compress import main

pytest.importorskip("onnxruntime")

FAST = ["--latency_runs", "3", "--calibration", "64"]


@pytest.fixture(scope="module")
def compressed(teacher_run, student_run, tmp_path_factory):
    """The output directory of one compress run on the session's teacher and student."""
    out = tmp_path_factory.mktemp("compress") / "out"
    assert main(["--ckpt", str(student_run / "best.ckpt"), "--teacher", str(teacher_run / "best.ckpt"),
                 "--out_dir", str(out), *FAST]) == 0
    return out


def test_compress_writes_every_artifact_and_a_report_naming_one(compressed, student_run):
    out = compressed
    student = student_run.name  # each network is named by its run directory
    names = {p.name for p in out.iterdir()}
    assert {f"{student}.onnx", f"{student}.int8.onnx", "teacher.onnx", "teacher.int8.onnx", "compress.json",
            "compress.md", "compress.png", f"{student}.json"} <= names
    report = json.loads((out / "compress.json").read_text())
    rows = {r["name"]: r for r in report["artifacts"]}
    assert set(rows) == {f"{role} ({kind})" for role in ("teacher", student)
                         for kind in ("PyTorch", "ONNX fp32", "ONNX int8")}
    for row in rows.values():
        assert {"params", "flops", "bytes", "size_ratio", "acc", "f1", "acc_change_points", "agreement_with_fp32",
                "latency_ms", "throughput", "speedup_vs_pytorch", "speedup_vs_onnx_fp32", "runs_with"} <= set(row)
        assert {row["runs_with"][kind]["intra_op_threads"] for kind in ("latency", "throughput")} <= {1, 2, 4, 8, 16, 32, 64}
    assert rows[f"{student} (ONNX fp32)"]["acc"] == pytest.approx(rows[f"{student} (PyTorch)"]["acc"])
    assert rows[f"{student} (ONNX fp32)"]["agreement_with_fp32"] == 1.0
    assert report["recommended"].startswith(f"{student} (")
    recommended = rows[report["recommended"]]
    assert recommended["acc"] >= rows[f"{student} (PyTorch)"]["acc"] - 0.003
    assert report["headline"]["params_ratio"] == pytest.approx(rows["teacher (PyTorch)"]["params"] / recommended["params"])
    assert report["recommended"] in report["verdict"]
    sidecar = json.loads((out / f"{student}.json").read_text())
    assert sidecar["input_shape"] == [1, 28, 28] and sidecar["data"]["dataset"] == "fashion_mnist"
    assert sidecar["params"] == rows[f"{student} (PyTorch)"]["params"] and sidecar["format"] == "onnx fp32"
    # the file runs as it was timed: predict and evaluate open it with the options compress chose
    assert sidecar["session"] == rows[f"{student} (ONNX fp32)"]["runs_with"]
    from distill.inference import load_artifact

    loaded = load_artifact(out / f"{student}.onnx").network
    assert {kind: o.as_dict() for kind, o in loaded.options.items()} == sidecar["session"]


def test_evaluate_compares_onnx_artifacts_beside_checkpoints(compressed, teacher_run, student_run, tmp_path):
    from distill.evaluate import main as evaluate

    student = student_run.name
    files = [compressed / f"{student}.onnx", compressed / f"{student}.int8.onnx"]
    assert evaluate(["--teacher", str(teacher_run / "best.ckpt"), "--student", str(student_run / "best.ckpt"),
                     *map(str, files), "--out_dir", str(tmp_path), "--latency_runs", "3"]) == 0
    entries = {e["name"]: e for e in json.loads((tmp_path / "compare.json").read_text())["models"]}
    assert set(entries) == {teacher_run.name, student, f"{student}.onnx", f"{student}.int8.onnx"}
    fp32, int8, torch_fp32 = entries[f"{student}.onnx"], entries[f"{student}.int8.onnx"], entries[student]
    assert fp32["format"] == "onnx fp32" and int8["format"] == "onnx int8" and torch_fp32["format"] == "pytorch fp32"
    assert fp32["acc"] == pytest.approx(torch_fp32["acc"]) and fp32["params"] == torch_fp32["params"]
    assert fp32["agreement_with_teacher"] == pytest.approx(torch_fp32["agreement_with_teacher"])
    assert int8["weights_bytes"] < fp32["weights_bytes"] and int8["cpu"]["latency_ms"] > 0
    assert f"{student}.int8.onnx" in (tmp_path / "compare.md").read_text()


def test_an_onnx_file_without_its_description_is_one_line(compressed, teacher_run, student_run, tmp_path, capsys):
    from distill.evaluate import main as evaluate

    lone = tmp_path / "lone.onnx"
    lone.write_bytes((compressed / f"{student_run.name}.onnx").read_bytes())
    assert evaluate(["--teacher", str(teacher_run / "best.ckpt"), "--student", str(lone),
                     "--out_dir", str(tmp_path / "r")]) == 2
    assert "lone.json not found" in capsys.readouterr().err


def test_a_failed_export_leaves_nothing_in_the_output_directory(student_run, tmp_path, monkeypatch, capsys):
    import distill.compress as compress_module
    from distill.errors import UsageError

    def mismatch(*args, **kwargs):
        raise UsageError("student.onnx does not match PyTorch: max logit difference 1.0e+00")

    monkeypatch.setattr(compress_module, "verify_onnx", mismatch)
    out = tmp_path / "out"
    assert main(["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(out), *FAST]) == 2
    assert "does not match PyTorch" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []  # no partial files, no staging left


def test_a_stopped_run_cleans_its_work_folder_and_a_killed_ones_is_removed_next_time(student_run, tmp_path,
                                                                                    monkeypatch, capsys):
    import os
    import signal

    import distill.compress as compress_module

    def stop(*args, **kwargs):  # SIGTERM arrives while the artifacts are being written
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(compress_module, "verify_onnx", stop)
    out = tmp_path / "out"
    assert main(["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(out), *FAST]) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    killed = tmp_path / ".compress-killed"  # SIGKILL leaves one behind: its writer is gone
    killed.mkdir()
    (killed / "owner.pid").write_text("999999999\n")
    running = tmp_path / ".compress-running"  # another compress writing beside it right now
    running.mkdir()
    (running / "owner.pid").write_text(f"{os.getppid()}\n")
    assert compress_module.remove_stale_work(tmp_path) == [killed] and running.is_dir()


@pytest.mark.parametrize("args, message", [
    (["--max_drop", "-1"], "--max_drop must be >= 0"),
    (["--calibration", "0"], "--calibration must be >= 1"),
    (["--ckpt", "nowhere.ckpt"], "checkpoint nowhere.ckpt not found"),
])
def test_bad_input_is_one_line(student_run, tmp_path, capsys, args, message):
    argv = ["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(tmp_path / "o"), *FAST, *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, bad)
    assert main(["--ckpt", str(bad), "--out_dir", str(tmp_path / "o")]) == 2
    assert "not a distill checkpoint" in capsys.readouterr().err


def test_the_report_says_whether_pruning_beat_the_same_shape_distilled_from_scratch():
    pytest.importorskip("torch_pruning")
    from pathlib import Path

    from distill.checkpoint import Trained
    from distill.compress import pruning_statements, registry_twin
    from distill.models import create_model
    from distill.modules.prune import prune_channels

    hp = {"num_classes": 10, "input_shape": [1, 28, 28]}
    pruned = prune_channels(create_model("cnn_small", num_classes=10, in_channels=1).eval(), (1, 28, 28), ratio=0.5)
    sources = {"pruned": Trained(Path("p.ckpt"), pruned, {**hp, "model": "cnn_small", "pruning_ratio": 0.5}, {}),
               "mini": Trained(Path("m.ckpt"), create_model("cnn_mini", num_classes=10, in_channels=1),
                               {**hp, "model": "cnn_mini"}, {})}
    assert registry_twin(sources["pruned"]) == "cnn_mini"  # half of cnn_small's channels: cnn_mini's widths
    rows = [{"role": "pruned", "format": "pytorch fp32", "acc": 0.9132}, {"role": "mini", "format": "pytorch fp32", "acc": 0.9121}]
    (statement,) = pruning_statements(sources, rows)
    assert "+0.11 points against cnn_mini distilled from scratch (mini): pruning adds nothing here" in statement
    (hint,) = pruning_statements({"pruned": sources["pruned"]}, rows[:1])
    assert "--model.model cnn_mini" in hint


def row(role, kind, acc, ms, file="f.onnx"):
    return {"role": role, "name": f"{role} ({kind})", "format": kind.lower(), "file": file, "acc": acc,
            "latency_ms": ms, "throughput": 1000 / ms, "params": 10, "bytes": 1,
            "runs_with": {"latency": {"intra_op_threads": 1}, "throughput": {"intra_op_threads": 2}}}


def test_the_recommendation_counts_latencies_within_timing_noise_as_one_speed():
    from distill.compress import summarize
    from distill.tasks import get_task

    rows = [row("s", "PyTorch", 0.9118, 0.100, None), row("s", "ONNX fp32", 0.9118, 0.0160),
            row("s", "ONNX int8", 0.9129, 0.0270), row("s", "ONNX fp16", 0.9116, 0.0155),
            row("teacher", "PyTorch", 0.9271, 0.367, None)]
    logits = {r["name"]: torch.eye(3) for r in rows}
    report = summarize(rows, logits, 0.3, "s", get_task("classification"))
    # fp16 is 3 % faster: one speed with fp32, which is the more accurate
    assert report["recommended"] == "s (ONNX fp32)"
    assert report["headline"]["latency_ratio"] == pytest.approx(0.367 / 0.016)
    assert "(threads at batch 1/256: teacher 1/2, s (ONNX fp32) 1/2)" in report["verdict"]
    rows[3]["latency_ms"] = 0.010  # clearly faster: it wins
    assert summarize(rows, logits, 0.3, "s", get_task("classification"))["recommended"] == "s (ONNX fp16)"


def test_fp16_files_are_checked_and_said_plainly_when_slower(student_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxconverter_common")
    import distill.compress as compress_module

    out = tmp_path / "out"
    assert main(["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(out), "--precision", "fp16", *FAST]) == 0
    report = json.loads((out / "compress.json").read_text())
    rows = {r["name"]: r for r in report["artifacts"]}
    fp16 = rows[f"{student_run.name} (ONNX fp16)"]
    assert fp16["parity"]["top1_agreement"] >= 0.999 and fp16["bytes"] < rows[f"{student_run.name} (ONNX fp32)"]["bytes"]
    assert f"{student_run.name} (ONNX int8)" not in rows  # only the precisions asked for
    assert json.loads((out / f"{student_run.name}.fp16.json").read_text())["format"] == "onnx fp16"
    # float16 inputs too, when asked: the file takes them and predicts the same
    assert main(["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(tmp_path / "io"), "--precision",
                 "fp16", "--fp16_io", *FAST]) == 0
    io_rows = {r["name"]: r for r in json.loads((tmp_path / "io" / "compress.json").read_text())["artifacts"]}
    assert io_rows[f"{student_run.name} (ONNX fp16)"]["acc"] == pytest.approx(fp16["acc"], abs=0.002)
    # a file that parts from its network more than float16 rounding can is refused, and nothing is written
    monkeypatch.setitem(compress_module.MIN_AGREEMENT, compress_module.FP16_FORMAT, 1.01)
    assert main(["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(tmp_path / "bad"), "--precision", "fp16",
                 *FAST]) == 2
    assert "predicts otherwise than" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()
    assert main(["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(tmp_path / "x"), "--precision", "fp8"]) == 2


def test_names_come_from_run_directories_or_the_file_itself(tmp_path):
    from pathlib import Path

    from distill.evaluate import name_models

    (tmp_path / "run").mkdir()
    paths = [tmp_path / "run" / "best.ckpt", Path("../student.ckpt"), tmp_path / "x" / "last.ckpt", Path("m.onnx"),
             Path("student.ckpt")]
    assert name_models(paths) == ["run", "student", "x", "m.onnx", "student-2"]
