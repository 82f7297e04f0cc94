"""Every command refuses, in one line and before any work, an output path it cannot write (a catalogue)."""

import pytest

from distill.compress import main as compress
from distill.evaluate import main as evaluate
from distill.predict import main as predict
from distill.train import main as train
from distill.tune.cli import main as tune


def commands(student_run, teacher_run, space):
    ckpt, teacher = str(student_run / "best.ckpt"), str(teacher_run / "best.ckpt")
    return {
        "train": (train, lambda out: ["teacher", "--model.model", "cnn_tiny", "--run_dir", out], "--run_dir", "dir"),
        "evaluate": (evaluate, lambda out: ["--teacher", teacher, "--student", ckpt, "--out_dir", out], "--out_dir", "dir"),
        "compress": (compress, lambda out: ["--ckpt", ckpt, "--out_dir", out], "--out_dir", "dir"),
        "tune": (tune, lambda out: ["student", "--space", str(space), "--out", out], "--out", "dir"),
        "predict": (predict, lambda out: ["--model", ckpt, "--input", str(space), "--out", out], "--out", "file"),
    }


@pytest.mark.parametrize("command", ["train", "evaluate", "compress", "tune", "predict"])
@pytest.mark.parametrize("obstacle", ["a file where a directory is wanted", "a directory where a file is wanted",
                                      "a file above it"])
def test_an_output_path_in_the_way_is_one_line_and_exit_2(command, obstacle, student_run, teacher_run, tmp_path,
                                                           capsys):
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  model.lr: {type: float, low: 0.001, high: 0.01}\n")
    run, argv, flag, wants = commands(student_run, teacher_run, space)[command]
    if obstacle == "a directory where a file is wanted" and wants == "dir":
        pytest.skip("this command writes a directory")
    if obstacle == "a file where a directory is wanted" and wants == "file":
        pytest.skip("this command writes a file")
    (tmp_path / "plain").write_text("keep me\n")
    (tmp_path / "folder").mkdir()
    out = {"a file where a directory is wanted": tmp_path / "plain",
           "a directory where a file is wanted": tmp_path / "folder",
           "a file above it": tmp_path / "plain" / "inside"}[obstacle]
    assert run(argv(str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {flag} {out}") and len(err[-1]) < 300, err
    assert (tmp_path / "plain").read_text() == "keep me\n"  # nothing in the way was touched
