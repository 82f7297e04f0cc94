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
        "train": (train, lambda out: ["teacher", "--model.model", "cnn_tiny", "--run_dir", out], "--run_dir"),
        "evaluate": (evaluate, lambda out: ["--teacher", teacher, "--student", ckpt, "--out_dir", out], "--out_dir"),
        "compress": (compress, lambda out: ["--ckpt", ckpt, "--out_dir", out], "--out_dir"),
        "tune": (tune, lambda out: ["student", "--space", str(space), "--out", out], "--out"),
        "predict": (predict, lambda out: ["--model", ckpt, "--input", str(space), "--out", out], "--out"),
    }


DIRECTORY_WRITERS, FILE_WRITERS = ("train", "evaluate", "compress", "tune"), ("predict",)
CASES = [(c, "a file where a directory is wanted") for c in DIRECTORY_WRITERS] + \
        [(c, "a directory where a file is wanted") for c in FILE_WRITERS] + \
        [(c, "a file above it") for c in (*DIRECTORY_WRITERS, *FILE_WRITERS)]


@pytest.mark.parametrize("command, obstacle", CASES)
def test_an_output_path_in_the_way_is_one_line_and_exit_2(command, obstacle, student_run, teacher_run, tmp_path,
                                                           capsys):
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  model.lr: {type: float, low: 0.001, high: 0.01}\n")
    run, argv, flag = commands(student_run, teacher_run, space)[command]
    (tmp_path / "plain").write_text("keep me\n")
    (tmp_path / "folder").mkdir()
    out = {"a file where a directory is wanted": tmp_path / "plain",
           "a directory where a file is wanted": tmp_path / "folder",
           "a file above it": tmp_path / "plain" / "inside"}[obstacle]
    assert run(argv(str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {flag} {out}") and len(err[-1]) < 300, err
    assert (tmp_path / "plain").read_text() == "keep me\n"  # nothing in the way was touched
