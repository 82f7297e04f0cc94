"""The input catalogue: what users' own tools write, given to each command; every case is right or one line.

Each row is one input class given to one command, with the outcome it must have: exit 0 and the
right result, or exit 2 with one ``error:`` line naming the problem (never a traceback, never a
silent wrong figure). The README's "Guarantees" point here; other files prove a few more
(``test_outputs.py``: output paths; ``test_errors.py``: signals; ``test_csv_properties.py``: random tables).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from distill.predict import main as predict
from distill.train import main as train

pytest.importorskip("sklearn")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false"]
HEADER = ["x", "y", "colour", "label"]


def rows(n: int, seed: int = 0) -> list[list[str]]:
    """Three classes from two numbers and a colour."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = i % 3
        out.append([f"{rng.normal(2.0 * k, 0.7):.4f}", f"{rng.normal(-k, 0.7):.4f}", ["red", "green", "blue"][k],
                    f"class{k}"])
    return out


def text(header: list[str], body: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalogue")
    (root / "train.csv").write_text(text(HEADER, rows(120)))
    assert train(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "3", "--data", "tabular",
                  "--data.path", str(root / "train.csv"), "--data.target", "label", *QUIET,
                  "--run_dir", str(root / "run")]) == 0
    return root / "run" / "best.ckpt"


def write(content: str | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "input.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path
    return make


NEW = rows(5, seed=1)
# name -> (how the input file is made, exit code, the rows predicted or the error's words)
PREDICT_TABLE = {
    "plain": (write(text(HEADER, NEW)), 0, 5),
    "no label column": (write(text(HEADER[:3], [r[:3] for r in NEW])), 0, 5),
    "columns reordered": (write(text(HEADER[::-1], [r[::-1] for r in NEW])), 0, 5),
    "an extra column": (write(text([*HEADER, "note"], [[*r, "n"] for r in NEW])), 0, 5),
    "byte-order mark": (write(b"\xef\xbb\xbf" + text(HEADER, NEW).encode()), 0, 5),
    "semicolons": (write(text(HEADER, NEW, ";")), 0, 5),
    "tabs": (write(text(HEADER, NEW, "\t")), 0, 5),
    "CRLF line ends": (write(text(HEADER, NEW).replace("\n", "\r\n")), 0, 5),
    "blank lines": (write(text(HEADER, NEW[:2]) + "\n\n" + text(HEADER, NEW[2:]).split("\n", 1)[1]), 0, 7),
    "missing cells": (write(text(HEADER, [["", r[1], "NA", r[3]] for r in NEW])), 0, 5),
    "an unseen category": (write(text(HEADER, [[r[0], r[1], "purple", r[3]] for r in NEW])), 0, 5),
    "quoted separators": (write(text(HEADER, [[r[0], r[1], "red", "a, b"] for r in NEW])), 0, 5),
    "latin-1 bytes": (write(text(HEADER, NEW).replace("red", "rouge\xe9").encode("latin-1")), 2, "is not UTF-8"),
    "a renamed column": (write(text(["x", "why", "colour", "label"], NEW)), 2, "column 'y' is missing"),
    "a word in a number column": (write(text(HEADER, [NEW[0], ["two", *NEW[1][1:]]])), 2,
                                  "column x, line 3: 'two' is not a number"),
    "a ragged row": (write(text(HEADER, NEW) + "1,2\n"), 2, "line 7: 2 fields, the header has 4"),
    "an empty file": (write(""), 2, "is empty"),
    "a header only": (write(",".join(HEADER) + "\n"), 2, "has a header but no rows"),
    "binary bytes": (write(bytes(range(256)) * 4), 2, "is not UTF-8"),
    "a folder": (lambda folder: folder, 2, "predicts the rows of a CSV file"),
    "no such file": (lambda folder: folder / "nowhere.csv", 2, "predicts the rows of a CSV file"),
}


@pytest.mark.parametrize("case", list(PREDICT_TABLE))
def test_predict_on_a_table(case, table_model, tmp_path, capsys):
    make, code, expected = PREDICT_TABLE[case]
    out = tmp_path / "p.csv"
    assert predict(["--model", str(table_model), "--input", str(make(tmp_path)), "--out", str(out)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:
        with open(out, newline="") as f:
            predicted = list(csv.DictReader(f))
        assert len(predicted) == expected and all(r["class"] in ("class0", "class1", "class2") or
                                                  r["status"] == "blank row" for r in predicted)
    else:
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
        assert not out.exists()


def test_an_unseen_category_and_reordered_columns_predict_as_the_plain_file(table_model, tmp_path):
    """Columns are read by name, not position; a category never seen in training changes no other column."""
    outputs = {}
    for case in ("plain", "columns reordered"):
        out = tmp_path / f"{case}.csv"
        assert predict(["--model", str(table_model), "--input", str(PREDICT_TABLE[case][0](tmp_path)),
                        "--out", str(out)]) == 0
        outputs[case] = [line.split(",")[1:3] for line in out.read_text().splitlines()[1:]]
    assert outputs["plain"] == outputs["columns reordered"]


TRAIN_TABLE = {
    "plain": (text(HEADER, rows(60)), [], 0, ""),
    "byte-order mark": ("\ufeff" + text(HEADER, rows(60)), [], 0, ""),
    "semicolons": (text(HEADER, rows(60), ";"), [], 0, ""),
    "the target among the categories": (text(HEADER, rows(60)), ["--data.categorical", "[colour, label]"], 2,
                                        "--data.categorical lists the target 'label'"),
    "three rows": (text(HEADER, rows(3)), ["--data.test_fraction", "0.5"], 2, "has 3 rows with a target"),
    "an unknown target": (text(HEADER, rows(60)), ["--data.target", "species"], 2, "column 'species' is not in"),
    "one class": (text(HEADER, [r[:3] + ["same"] for r in rows(60)]), [], 2, "takes 1 value(s)"),
    "a wrong type": (text(HEADER, rows(60)), ["--data.n_components", "many"], 2,
                     "--data.n_components: 'many' is not of type"),
    "an infinite regression target": (text(["x", "price"], [[str(i), str(i * 2.5)] for i in range(40)] + [["41", "inf"]]),
                                      ["--data.target", "price"], 2, "'inf' is not a finite number"),
    "latin-1 bytes": (text(HEADER, rows(60)).replace("red", "rouge\xe9"), ["--latin1"], 2, "is not UTF-8"),
    # R² of one row is undefined: six rows left one for test, and the sanity check crashed (exit 1).
    "six regression rows": (text(["x", "price"], [[str(i), f"{1000 + 7.5 * i:.2f}"] for i in range(6)]),
                            ["--data.target", "price"], 2, "a regression needs at least 2 training rows and 2 in"),
    # A European spreadsheet's "339709,50" read as words: a 300-class classification, silently.
    "decimal commas": (text(["x", "price"], [[str(i), f"{1000 + i},50"] for i in range(40)], ";"),
                       ["--data.target", "price"], 2, "column price holds numbers written with decimal commas"),
}


@pytest.mark.parametrize("case", list(TRAIN_TABLE))
def test_train_on_a_table(case, tmp_path, capsys):
    content, extra, code, message = TRAIN_TABLE[case]
    path = tmp_path / "t.csv"
    latin = "--latin1" in extra
    path.write_bytes(content.encode("latin-1" if latin else "utf-8"))
    extra = [a for a in extra if a != "--latin1"]
    target = [] if "--data.target" in extra else ["--data.target", "label"]
    assert train(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "1", "--data", "tabular",
                  "--data.path", str(path), *target, *extra, *QUIET, "--run_dir", str(tmp_path / "run")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    if code:
        assert err and err[-1].startswith("error: ") and message in err[-1] and len(err[-1]) < 400, err
        assert not (tmp_path / "run" / "best.ckpt").exists()
    else:
        assert (tmp_path / "run" / "metrics.json").is_file()


def image_file(kind: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from PIL import Image

        path = folder / f"{kind}.png"
        grey = (np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)
        if kind == "grey":
            Image.fromarray(grey).save(path)
        elif kind == "16-bit grey":
            Image.fromarray(grey.astype(np.uint16) * 257).save(path)
        elif kind == "RGB":
            Image.fromarray(np.stack([grey] * 3, axis=2)).save(path)
        elif kind == "RGBA":
            Image.fromarray(np.stack([grey] * 4, axis=2)).save(path)
        elif kind == "palette":
            Image.fromarray(grey).convert("P").save(path)
        elif kind == "large JPEG":
            path = folder / "large.jpg"
            Image.fromarray(np.stack([np.resize(grey, (300, 400))] * 3, axis=2)).save(path)
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "not an image":
            path.write_bytes(b"PNG? no." * 20)
        return path
    return make


PREDICT_IMAGE = {kind: 0 for kind in ("grey", "16-bit grey", "RGB", "RGBA", "palette", "large JPEG")}
PREDICT_IMAGE.update({"empty": 2, "not an image": 2})


@pytest.mark.parametrize("kind", list(PREDICT_IMAGE))
def test_predict_on_an_image(kind, student_run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    path = image_file(kind)(tmp_path)
    code = predict(["--model", str(student_run / "best.ckpt"), "--input", str(path), "--out", str(out)])
    assert code == PREDICT_IMAGE[kind]
    err = capsys.readouterr().err.strip().splitlines()
    if code:
        assert len(err) == 1 and err[0].startswith(f"error: {path}"), err
    else:
        assert len(out.read_text().splitlines()) == 2


def test_a_16_bit_image_predicts_as_its_8_bit_twin(student_run, tmp_path):
    classes = []
    for kind in ("grey", "16-bit grey"):
        out = tmp_path / f"{kind}.csv"
        assert predict(["--model", str(student_run / "best.ckpt"), "--input", str(image_file(kind)(tmp_path)),
                        "--out", str(out)]) == 0
        classes.append(out.read_text().splitlines()[1].split(",")[1:3])
    assert classes[0] == classes[1]  # before: clipped to a white square, another class


def artifact(kind: str) -> Callable[[Path, Path], list[str]]:
    """How a model file given to evaluate, compress and predict is made from a trained table model: the
    file, and the arguments besides it (``--data_root``)."""
    def make(folder: Path, trained: Path) -> list[str]:
        path = folder / "model.ckpt"
        if kind == "missing":
            return [str(path)]
        if kind == "a folder":
            return [str(folder)]
        if kind == "zero bytes":
            path.write_bytes(b"")
        elif kind == "text":
            path.write_text("x,y\n1,2\n")
        elif kind == "truncated":
            path.write_bytes(trained.read_bytes()[:4000])
        elif kind == "a pickle of code":
            import torch

            torch.save({"state_dict": {}, "loss": Path("evil")}, path)  # weights_only refuses the object
        elif kind in ("a copy", "data moved", "data moved, --data_root", "data changed"):
            # a model of its own whose training CSV the case moves or edits
            table = folder / "data" / "train.csv"
            table.parent.mkdir()
            table.write_text(text(HEADER, rows(120)))
            assert train(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "1", "--data", "tabular",
                          "--data.path", str(table), "--data.target", "label", *QUIET,
                          "--run_dir", str(folder / "run")]) == 0
            path = folder / "elsewhere" / "model.ckpt"
            path.parent.mkdir()
            path.write_bytes((folder / "run" / "best.ckpt").read_bytes())
            if kind.startswith("data moved"):
                (folder / "moved").mkdir()
                table.rename(folder / "moved" / "train.csv")
                return [str(path)] + (["--data_root", str(folder / "moved")] if kind.endswith("root") else [])
            if kind == "data changed":
                table.write_text(text(HEADER, rows(120)[::-1]))
        return [str(path)]
    return make


# input class -> (how it is made, then per command: exit 0, None (does not apply), or the error's words)
ARTIFACTS = {
    "missing": (artifact("missing"), "not found", "not found", "not found"),
    "a folder": (artifact("a folder"), *["is a folder"] * 3),
    "zero bytes": (artifact("zero bytes"), "is not a checkpoint", "is not a checkpoint", "is not a checkpoint"),
    "text": (artifact("text"), "is not a checkpoint", "is not a checkpoint", "is not a checkpoint"),
    "truncated": (artifact("truncated"), "is truncated or corrupt", "is truncated or corrupt", "is truncated or corrupt"),
    "a pickle of code": (artifact("a pickle of code"), *["Unsupported global: GLOBAL pathlib"] * 3),
    "a copy": (artifact("a copy"), 0, 0, 0),
    # the test rows cannot be rebuilt, and saying so is right; predict needs no training file
    "data moved": (artifact("data moved"), "--data_root DIR", "--data_root DIR", 0),
    "data moved, --data_root": (artifact("data moved, --data_root"), 0, 0, None),
    # a rebuilt split of a changed file would put training rows among the test rows
    "data changed": (artifact("data changed"), "changed since the model was trained", "changed since the model was "
                     "trained", 0),
}


@pytest.mark.parametrize("command", ["evaluate", "compress", "predict"])
@pytest.mark.parametrize("case", list(ARTIFACTS))
def test_model_files_given_to_each_command(case, command, table_model, tmp_path, capsys):
    from distill.compress import main as compress
    from distill.evaluate import main as evaluate

    make, *outcomes = ARTIFACTS[case]
    outcome = outcomes[["evaluate", "compress", "predict"].index(command)]
    if outcome is None:
        pytest.skip("predict takes no --data_root")
    model, *extra = make(tmp_path, table_model)
    out = tmp_path / "out"
    if command == "evaluate":
        got = evaluate(["--teacher", model, "--student", model, *extra, "--out_dir", str(out), "--latency_runs", "1"])
    elif command == "compress":
        got = compress(["--ckpt", model, *extra, "--out_dir", str(out), "--latency_runs", "3", "--calibration", "16"])
    else:
        (tmp_path / "new.csv").write_text(text(HEADER, NEW))
        got = predict(["--model", model, "--input", str(tmp_path / "new.csv"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert got == (0 if outcome == 0 else 2), err[-3:]
    if outcome != 0:
        assert err and err[-1].startswith("error: ") and outcome in err[-1] and len(err[-1]) < 400, err[-3:]
        assert "\x1b" not in err[-1] and (not out.exists() or not any(out.iterdir()))
