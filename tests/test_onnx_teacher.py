"""Teachers from any framework: an ONNX file run by onnxruntime, for tables and images, through the student CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.errors import UsageError
from distill.teacher.onnx_teacher import OnnxTeacher
from distill.train import main
from tests.conftest import FAST

pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A table, its rows as the student's data prepares them, and a scikit-learn model fitted on those rows."""
    from sklearn.linear_model import LogisticRegression

    from distill.data import TabularDataModule
    from tests.test_tabular import make_table

    root = tmp_path_factory.mktemp("onnx_teacher")
    path = make_table(root / "t.csv")
    data = TabularDataModule(path=str(path), target="label")
    x, y = data.train_x.numpy(), data.train_y.numpy()
    model = LogisticRegression(max_iter=500).fit(x, y)
    (root / "lr.onnx").write_bytes(skl2onnx.to_onnx(model, x[:1]).SerializeToString())
    accuracy = float((model.predict(data.test_x.numpy()) == data.test_y.numpy()).mean())
    return {"root": root, "csv": path, "data": data, "model": model, "accuracy": accuracy}


def student(table, teacher, run_dir, *extra):
    return main(["student", "--data", "tabular", "--data.path", str(table["csv"]), "--data.target", "label",
                 "--model.model", "mlp_small", "--model.teacher", str(teacher), "--trainer.max_epochs", "2",
                 *QUIET, "--run_dir", str(run_dir), *extra])


def test_probabilities_become_log_probabilities_in_the_data_class_order(table):
    teacher = OnnxTeacher(table["root"] / "lr.onnx")
    teacher.set_classes(table["data"].class_names)
    assert teacher.probabilities and teacher.zipmap  # scikit-learn's {class: probability} rows
    rows = table["data"].test_x[:20]
    expected = table["model"].predict_proba(rows.numpy())
    np.testing.assert_allclose(torch.softmax(teacher(rows), dim=1).numpy(), expected, atol=1e-5)


def test_outputs_read_as_the_wrong_kind_of_score_are_said(table, tmp_path):
    """skl2onnx names raw decision scores ``probabilities`` too: read as such, every negative score would become
    log(1e-8). The reverse, probabilities read as logits, gives soft targets far flatter than the teacher's."""
    x = table["data"].train_x.numpy()
    raw = skl2onnx.to_onnx(table["model"], x[:1], options={"zipmap": False, "raw_scores": True})
    (tmp_path / "raw.onnx").write_bytes(raw.SerializeToString())
    rows = table["data"].test_x[:20]
    with pytest.raises(UsageError, match="is read as probabilities .* --model.teacher_scores logits"):
        OnnxTeacher(tmp_path / "raw.onnx")(rows)
    scores = OnnxTeacher(tmp_path / "raw.onnx", scores="logits")(rows)
    np.testing.assert_allclose(scores.numpy(), table["model"].decision_function(rows.numpy()), rtol=1e-4, atol=1e-4)
    plain = skl2onnx.to_onnx(table["model"], x[:1], options={"zipmap": False})
    (tmp_path / "plain.onnx").write_bytes(plain.SerializeToString())
    with pytest.warns(UserWarning, match="is read as logits but every row is a probability distribution"):
        OnnxTeacher(tmp_path / "plain.onnx", output="probabilities", scores="logits")(rows)


def test_a_scikit_learn_teacher_teaches_through_the_cli_and_its_figure_is_its_own(table, tmp_path):
    assert student(table, table["root"] / "lr.onnx", tmp_path / "s") == 0
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["teacher_kind"] == "onnx" and metrics["teacher_params"] > 0
    assert metrics["teacher_test_acc"] == pytest.approx(table["accuracy"])
    caches = list((table["root"] / "teacher_logits").glob("*.npy"))
    assert len(caches) == 1  # cached like any teacher, beside its file
    # Another file at the same path is another teacher: a new cache entry, never the old logits.
    from sklearn.linear_model import LogisticRegression

    other = LogisticRegression(C=0.01, max_iter=500).fit(table["data"].train_x.numpy(), table["data"].train_y.numpy())
    changed = tmp_path / "lr.onnx"
    changed.write_bytes(skl2onnx.to_onnx(other, table["data"].train_x.numpy()[:1]).SerializeToString())
    assert student(table, changed, tmp_path / "s2") == 0
    assert json.loads((tmp_path / "s2" / "metrics.json").read_text())["teacher_digest"] != metrics["teacher_digest"]


def test_a_lightgbm_teacher_through_onnxmltools(table, tmp_path):
    lightgbm = pytest.importorskip("lightgbm")
    onnxmltools = pytest.importorskip("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, y = table["data"].train_x.numpy(), table["data"].train_y.numpy()
    trees = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y)
    onnx_model = onnxmltools.convert_lightgbm(trees, initial_types=[("input", FloatTensorType([None, x.shape[1]]))])
    (tmp_path / "trees.onnx").write_bytes(onnx_model.SerializeToString())
    assert student(table, tmp_path / "trees.onnx", tmp_path / "s") == 0
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    own = float((trees.predict(table["data"].test_x.numpy()) == table["data"].test_y.numpy()).mean())
    assert metrics["teacher_test_acc"] == pytest.approx(own) and metrics["teacher_params"] > 1000


def test_an_image_teacher_exported_to_onnx_teaches_like_its_checkpoint(teacher_run, tmp_path):
    from distill.checkpoint import load_trained
    from distill.export import export_onnx

    network = load_trained(teacher_run / "best.ckpt").network
    export_onnx(network, (1, 28, 28), tmp_path / "teacher.onnx")  # no sidecar: any framework's file
    args = ["student", "--model.model", "cnn_small", *FAST]
    assert main([*args, "--model.teacher", str(tmp_path / "teacher.onnx"), "--run_dir", str(tmp_path / "a")]) == 0
    assert main([*args, "--model.teacher", str(teacher_run / "best.ckpt"), "--run_dir", str(tmp_path / "b")]) == 0
    from_onnx, from_ckpt = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    assert from_onnx["teacher_kind"] == "onnx" and not OnnxTeacher(tmp_path / "teacher.onnx").probabilities
    assert from_onnx["teacher_test_acc"] == pytest.approx(from_ckpt["teacher_test_acc"])


@pytest.mark.parametrize("extra, message", [
    (["--model.teacher_output", "scores"], "has outputs ['output_label', 'output_probability']"),
    (["--model.teacher_input", "x"], "--model.teacher_input x: "),
    (["--model.teacher_scores", "odds"], "model.teacher_scores"),
    (["--model.teacher_weights", "w.safetensors"], "is an ONNX file"),
])
def test_a_bad_choice_is_one_line(table, tmp_path, capsys, extra, message):
    assert student(table, table["root"] / "lr.onnx", tmp_path / "s", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err[-3:]


def test_scores_keyed_by_other_class_names_are_refused(table, tmp_path):
    from sklearn.linear_model import LogisticRegression

    x = table["data"].train_x.numpy()
    names = np.array(["cat", "dog", "emu"])[table["data"].train_y.numpy()]
    (tmp_path / "named.onnx").write_bytes(skl2onnx.to_onnx(LogisticRegression(max_iter=300).fit(x, names),
                                                           x[:1]).SerializeToString())
    teacher = OnnxTeacher(tmp_path / "named.onnx")
    teacher.set_classes(table["data"].class_names)  # class0, class1, class2
    with pytest.raises(UsageError, match="scores classes"):
        teacher(table["data"].test_x[:2])


def test_a_distill_onnx_file_brings_its_fit_and_is_adapted_like_its_checkpoint(table, tmp_path):
    from distill.compress import main as compress

    data = ["--data", "tabular", "--data.path", str(table["csv"]), "--data.target", "label"]
    assert main(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "3", *data, *QUIET,
                 "--run_dir", str(tmp_path / "teacher")]) == 0
    own = json.loads((tmp_path / "teacher" / "metrics.json").read_text())["test/acc"]
    assert compress(["--ckpt", str(tmp_path / "teacher" / "best.ckpt"), "--out_dir", str(tmp_path / "c"),
                     "--latency_runs", "3", "--calibration", "16"]) == 0
    # its rows were z-scored and one-hot; these are min-max scaled and ordinal: re-encoded for it
    (onnx_file,) = (tmp_path / "c").glob("*-ckpt.onnx")  # a --ckpt named teacher: role teacher-ckpt
    assert main(["student", "--model.model", "mlp_small", "--model.teacher", str(onnx_file),
                 "--trainer.max_epochs", "1", *data, "--data.scaling", "minmax", "--data.encoding", "ordinal",
                 *QUIET, "--run_dir", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["teacher_test_acc"] == pytest.approx(own)


def test_a_teacher_of_another_width_or_at_chance_is_said_in_one_line(table, tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression

    x, y = table["data"].train_x.numpy(), table["data"].train_y.numpy()
    narrow = LogisticRegression(max_iter=300).fit(x[:, :2], y)
    (tmp_path / "narrow.onnx").write_bytes(skl2onnx.to_onnx(narrow, x[:1, :2]).SerializeToString())
    assert student(table, tmp_path / "narrow.onnx", tmp_path / "s") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "the data gives [2, " in last and "takes X of shape" in last
    # trained on rows prepared otherwise (here: every feature negated): it runs, and its figure says so
    flipped = LogisticRegression(max_iter=300).fit(-x, y)
    (tmp_path / "flipped.onnx").write_bytes(skl2onnx.to_onnx(flipped, x[:1]).SerializeToString())
    with pytest.warns(UserWarning, match="near chance"):
        assert student(table, tmp_path / "flipped.onnx", tmp_path / "f") == 0
