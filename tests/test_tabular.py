"""Table rows: each preprocessing step against scikit-learn, fitted on training rows only, saved as plain
values, and both stages through the real CLI on a small CSV."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from distill.checkpoint import load_checkpoint, load_trained, rebuild_data
from distill.data.preprocess import apply_preprocessing, fit_preprocessing
from distill.data.tabular import TabularDataModule, table_text
from distill.errors import UsageError
from distill.losses import DISTILLERS
from distill.train import main

sklearn = pytest.importorskip("sklearn")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false"]


def make_table(path, rows=240, seed=0, shift=0.0, missing=True):
    """Three classes from two numbers and a colour, with gaps; ``shift`` moves every ``x`` value."""
    rng = np.random.default_rng(seed)
    header = ["x", "y", "colour", "label"]
    body = []
    for i in range(rows):
        k = i % 3
        x, y = rng.normal(2.0 * k, 0.7) + shift, rng.normal(-k, 0.7)
        colour = ["red", "green", "blue"][k] if rng.random() < 0.7 else ["red", "green", "blue"][rng.integers(3)]
        cells = [f"{x:.4f}", f"{y:.4f}", colour, f"class{k}"]
        if missing and rng.random() < 0.1:
            cells[rng.integers(3)] = "NA"
        body.append(cells)
    path.write_text(table_text(header, body))
    return path


def numeric_matrix(rng, n=50):
    x = rng.normal(3.0, 2.0, (n, 3))
    x[rng.random((n, 3)) < 0.15] = np.nan
    return x


def test_numeric_steps_match_scikit_learn():
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    rng = np.random.default_rng(0)
    x, empty = numeric_matrix(rng), np.empty((50, 0), dtype=object)
    for impute in ("mean", "median", "most_frequent"):
        filled = SimpleImputer(strategy=impute).fit_transform(x)
        for scaling, scaler in (("zscore", StandardScaler()), ("minmax", MinMaxScaler())):
            state = fit_preprocessing(x, empty, None, impute=impute, scaling=scaling)
            assert np.allclose(apply_preprocessing(x, empty, state), scaler.fit_transform(filled), atol=1e-6)


def test_indicators_encodings_and_reductions_match_scikit_learn():
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.impute import MissingIndicator
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    rng = np.random.default_rng(1)
    x = numeric_matrix(rng, 60)
    cats = rng.choice(["a", "b", "c"], (60, 2)).astype(object)
    labels = rng.integers(0, 3, 60)
    state = fit_preprocessing(x, cats, labels, missing_indicator=True, scaling="none")
    out = apply_preprocessing(x, cats, state)
    indicators = MissingIndicator(features="missing-only").fit_transform(x)
    assert np.allclose(out[:, 3:3 + indicators.shape[1]], indicators)
    assert np.allclose(out[:, 3 + indicators.shape[1]:], OneHotEncoder().fit_transform(cats.astype(str)).toarray())
    ordinal = fit_preprocessing(x, cats, None, encoding="ordinal", scaling="none")
    assert np.allclose(apply_preprocessing(x, cats, ordinal)[:, 3:], OrdinalEncoder().fit_transform(cats.astype(str)))
    full = apply_preprocessing(x, cats, fit_preprocessing(x, cats, None))
    pca_state = fit_preprocessing(x, cats, None, reduction="pca", n_components=3)
    assert np.allclose(apply_preprocessing(x, cats, pca_state), PCA(3, svd_solver="full").fit_transform(full), atol=1e-5)
    lda_state = fit_preprocessing(x, cats, labels, reduction="lda")
    expected = LinearDiscriminantAnalysis(n_components=2).fit(full, labels).transform(full)
    assert np.allclose(apply_preprocessing(x, cats, lda_state), expected, atol=1e-5)


def test_unseen_categories_and_gaps_are_handled_as_documented():
    x = np.array([[1.0], [np.nan], [3.0]])
    cats = np.array([["a"], [None], ["a"]], dtype=object)
    state = fit_preprocessing(x, cats, None, scaling="none")
    out = apply_preprocessing(np.array([[np.nan]]), np.array([["zebra"]], dtype=object), state)
    assert out.tolist() == [[2.0, 0.0]]  # the training mean; an unseen category: all zeros (one-hot)
    ordinal = fit_preprocessing(x, cats, None, scaling="none", encoding="ordinal")
    assert apply_preprocessing(x[:1], np.array([["zebra"]], dtype=object), ordinal).tolist() == [[1.0, 1.0]]


def test_preprocessing_is_fitted_on_the_training_rows_only(tmp_path):
    base = TabularDataModule(path=str(make_table(tmp_path / "a.csv")), target="label")
    # The same table whose test rows (only) are shifted far away: the fitted scaler must not move.
    header, rows = (tmp_path / "a.csv").read_text().splitlines()[0].split(","), [
        line.split(",") for line in (tmp_path / "a.csv").read_text().splitlines()[1:]]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).numpy()
    test_rows = set(order[: round(len(rows) * 0.2)].tolist())
    for i in test_rows:
        if rows[i][0] != "NA":
            rows[i][0] = str(float(rows[i][0]) + 100.0)
    (tmp_path / "b.csv").write_text(table_text(header, rows))
    shifted = TabularDataModule(path=str(tmp_path / "b.csv"), target="label")
    assert shifted.fitted == base.fitted
    assert torch.equal(shifted.train_x, base.train_x) and not torch.equal(shifted.test_x, base.test_x)


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "nope"}, "column 'nope' is not in"),
    ({"target": "label", "reduction": "pca", "n_components": 50}, "PCA with 50 components"),
    ({"target": "label", "reduction": "lda", "n_components": 5}, "LDA with 5 components"),
])
def test_bad_tables_and_settings_are_one_line_errors(kwargs, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        TabularDataModule(path=str(make_table(tmp_path / "t.csv")), **kwargs)


@pytest.mark.parametrize("flag", ["categorical", "numeric", "drop"])
def test_the_target_among_the_features_is_refused(flag, tmp_path):
    # One-hot encoding the label into the inputs scored 100 % before: a wrong number with no word.
    with pytest.raises(UsageError, match=f"--data.{flag} lists the target 'label'"):
        TabularDataModule(path=str(make_table(tmp_path / "t.csv")), target="label", **{flag: ["label"]})


def test_row_identifiers_are_named_and_tables_too_small_to_split_are_refused(tmp_path):
    rows = [[str(1000 + i), f"{0.1 * i:.3f}", "ab"[i % 2]] for i in range(40)]  # id: a different whole number a row
    (tmp_path / "ids.csv").write_text(table_text(["id", "x", "label"], rows))
    with pytest.warns(UserWarning, match=r"column 'id' takes a different value on every one of the 40 rows"):
        TabularDataModule(path=str(tmp_path / "ids.csv"), target="label")
    # pandas' to_csv writes its index under an empty name: the hint given is one the flag takes
    (tmp_path / "index.csv").write_text(table_text(["", "x", "label"], [[str(i), *row[1:]] for i, row in enumerate(rows)]))
    with pytest.warns(UserWarning, match=re.escape("""--data.drop '[""]' leaves it out""")):
        TabularDataModule(path=str(tmp_path / "index.csv"), target="label")
    assert TabularDataModule(path=str(tmp_path / "index.csv"), target="label", drop=[""]).numeric_columns == ["x"]
    (tmp_path / "three.csv").write_text(table_text(["x", "label"], [["1", "a"], ["2", "b"], ["3", "a"]]))
    with pytest.raises(UsageError, match="has 3 rows with a target: 2 for test and 0 for validation leave 1 to train on"):
        TabularDataModule(path=str(tmp_path / "three.csv"), target="label", test_fraction=0.5)
    with pytest.warns(UserWarning, match="leave no validation rows: the best checkpoint is chosen on the 1 test rows"):
        TabularDataModule(path=str(tmp_path / "three.csv"), target="label", val_fraction=0.1)


def test_empty_files_all_missing_columns_and_words_in_numbers_are_refused(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UsageError, match="is empty"):
        TabularDataModule(path=str(tmp_path / "empty.csv"), target="label")
    (tmp_path / "gap.csv").write_text(table_text(["x", "z", "label"], [["1", "NA", "a"], ["2", "NA", "b"]] * 10))
    with pytest.raises(UsageError, match="column z has no value in the training rows"):
        TabularDataModule(path=str(tmp_path / "gap.csv"), target="label", numeric=["x", "z"])
    (tmp_path / "word.csv").write_text(table_text(["x", "label"], [["1", "a"], ["two", "b"]] * 10))
    with pytest.raises(UsageError, match=r"column x, line 3: 'two' is not a number"):
        TabularDataModule(path=str(tmp_path / "word.csv"), target="label", numeric=["x"])


def test_both_stages_run_through_the_cli_and_the_checkpoint_carries_the_transform(tmp_path, capsys):
    table = make_table(tmp_path / "t.csv")
    data = ["--data", "tabular", "--data.path", str(table), "--data.target", "label", "--data.missing_indicator", "true"]
    assert main(["teacher", "--model.model", "mlp_wide", "--trainer.max_epochs", "6", *data, *QUIET,
                 "--run_dir", str(tmp_path / "teacher")]) == 0
    teacher = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    assert teacher["test/acc"] > 0.6  # three well separated classes
    assert main(["student", "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "teacher" / "best.ckpt"),
                 "--trainer.max_epochs", "3", *data, *QUIET, "--run_dir", str(tmp_path / "student")]) == 0
    student = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert student["method"] == "kd" and student["teacher_test_acc"] == pytest.approx(teacher["test/acc"])
    # A student whose rows are preprocessed otherwise fed the teacher inputs it never saw (its own accuracy
    # 89.5 % became 63.2 % in the student's metrics, without a word): it now reads them as its fit writes them.
    assert main(["student", "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "teacher" / "best.ckpt"),
                 "--trainer.max_epochs", "1", *data, "--data.scaling", "minmax", "--data.encoding", "ordinal", *QUIET,
                 "--run_dir", str(tmp_path / "other")]) == 0
    other = json.loads((tmp_path / "other" / "metrics.json").read_text())
    assert other["teacher_test_acc"] == pytest.approx(teacher["test/acc"])
    # Where the rows cannot be turned back (a projection), one line before training.
    code = main(["student", "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "teacher" / "best.ckpt"),
                 *data, "--data.reduction", "pca", *QUIET, "--run_dir", str(tmp_path / "pca")])
    assert code == 2 and not (tmp_path / "pca" / "best.ckpt").exists()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(reduction: 'none' for the teacher, 'pca' here)" in last and "reduced (pca), which cannot be undone" in last
    # The report scores each network on the same test rows, each prepared by its own fit.
    from distill.evaluate import main as evaluate

    assert main(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "1", *data, "--data.scaling",
                 "minmax", *QUIET, "--run_dir", str(tmp_path / "minmax")]) == 0
    assert evaluate(["--teacher", str(tmp_path / "teacher" / "best.ckpt"), "--student",
                     str(tmp_path / "minmax" / "best.ckpt"), "--out_dir", str(tmp_path / "r"), "--latency_runs", "1"]) == 0
    scored = {m["name"]: m["acc"] for m in json.loads((tmp_path / "r" / "compare.json").read_text())["models"]}
    own = json.loads((tmp_path / "minmax" / "metrics.json").read_text())["test/acc"]
    assert scored == pytest.approx({"teacher": teacher["test/acc"], "minmax": own})
    # A network trained on another split would be scored on its own training rows: refused.
    assert main(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "1", *data, "--data.split_seed",
                 "7", *QUIET, "--run_dir", str(tmp_path / "split7")]) == 0
    assert evaluate(["--teacher", str(tmp_path / "teacher" / "best.ckpt"), "--student",
                     str(tmp_path / "split7" / "best.ckpt"), "--out_dir", str(tmp_path / "r7"), "--latency_runs", "1"]) == 2
    assert "differ in table split (split_seed)" in capsys.readouterr().err.strip().splitlines()[-1]
    # weights_only round trip: the data rebuilt from the checkpoint applies the identical, saved transform.
    ckpt = load_checkpoint(tmp_path / "student" / "best.ckpt")
    fitted = ckpt["datamodule_hyper_parameters"]["fitted"]
    assert isinstance(fitted["shift"], list) and ckpt["data_module"] == "tabular"
    trained = load_trained(tmp_path / "student" / "best.ckpt")
    rebuilt = rebuild_data(trained)
    original = TabularDataModule(path=str(table), target="label", missing_indicator=True)
    assert torch.equal(rebuilt.test_x, original.test_x) and rebuilt.input_shape == original.input_shape
    assert trained.network(rebuilt.test_x[:4]).shape == (4, 3)
    # A new CSV through the same transform; a column it lacks is one line.
    assert rebuilt.read_table_file(table)[0].shape[1] == rebuilt.input_shape[0]
    (tmp_path / "partial.csv").write_text(table_text(["x", "label"], [["1", "class0"]]))
    with pytest.raises(UsageError, match="column 'y' is missing"):
        rebuilt.read_table_file(tmp_path / "partial.csv")


def test_the_shipped_penguins_table_has_gaps_and_categories():
    pytest.importorskip("palmerpenguins")
    data = TabularDataModule(dataset="penguins")
    assert data.class_names == ("Adelie", "Chinstrap", "Gentoo") and data.target == "species"
    assert data.categorical_columns == ["island", "sex"] and "bill_length_mm" in data.numeric_columns
    assert data.num_training_samples() + len(data.test_x) == 344  # every penguin has a species; gaps are imputed


def make_regression_table(path, rows=200, seed=0):
    """y = 3x - 2z + a colour's offset + noise, in units far from zero (mean about 500)."""
    rng = np.random.default_rng(seed)
    body = []
    for _ in range(rows):
        x, z, colour = rng.normal(), rng.normal(), ["red", "blue"][rng.integers(2)]
        y = 500 + 30 * x - 20 * z + (15 if colour == "red" else -15) + rng.normal(0, 3)
        body.append([f"{x:.4f}", f"{z:.4f}", colour, f"{y:.3f}"])
    path.write_text(table_text(["x", "z", "colour", "y"], body))
    return path


def test_the_task_is_inferred_from_the_target_or_declared(tmp_path):
    from distill.data.tabular import infer_task

    assert infer_task(["1.5", "2", "3"]) == "regression" and infer_task(["a", "b"]) == "classification"
    assert infer_task(["0", "1", "2", "1"]) == "classification"  # a few whole-number codes are classes
    assert infer_task([str(i) for i in range(50)]) == "regression"
    table = make_regression_table(tmp_path / "r.csv")
    data = TabularDataModule(path=str(table), target="y")
    train_targets = data.train_y[data.train_set.indices]
    assert data.task == "regression" and data.num_classes == 1 and data.class_names == ()
    assert data.target_scale == pytest.approx((train_targets.mean().item(), train_targets.std(unbiased=False).item()),
                                              rel=1e-5)
    assert data.train_y.dtype == torch.float32
    declared = TabularDataModule(path=str(make_table(tmp_path / "c.csv")), target="label", task="classification")
    assert declared.task == "classification" and declared.target_scale is None
    with pytest.raises(UsageError, match="lda needs classes"):
        TabularDataModule(path=str(table), target="y", reduction="lda")


def test_the_shipped_diabetes_table_is_a_regression():
    data = TabularDataModule(dataset="diabetes")
    assert data.task == "regression" and data.target == "progression" and data.input_shape == (10,)
    assert data.num_training_samples() + len(data.test_x) == 442


def test_regression_through_the_cli_predicts_in_the_targets_units(tmp_path):
    from distill.evaluate import main as evaluate
    from distill.predict import main as predict

    table = make_regression_table(tmp_path / "r.csv")
    data = ["--data", "tabular", "--data.path", str(table), "--data.target", "y"]
    assert main(["teacher", "--model.model", "mlp_wide", "--trainer.max_epochs", "8", "--model.lr", "0.01", *data,
                 *QUIET, "--run_dir", str(tmp_path / "teacher")]) == 0
    teacher = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    assert teacher["task"] == "regression" and teacher["monitor"] == "val/r2" and "best_val_r2" in teacher
    assert teacher["test/r2"] > 0.8 and teacher["test/mse"] == pytest.approx(teacher["test/loss"])
    # Regression KD against the teacher's cached predictions: the task's default method, named nowhere
    # (the stage's default recipe names KD for its own images; other data takes its task's method).
    assert main(["student", "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "teacher" / "best.ckpt"),
                 "--trainer.max_epochs", "3", *data, *QUIET, "--run_dir", str(tmp_path / "student")]) == 0
    student = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert student["method"] == "regression_kd" and student["teacher_test_r2"] == pytest.approx(teacher["test/r2"])
    # From Python, a regression student without a method gets regression KD.
    from distill import DistillModule

    system = DistillModule(model="mlp_small", teacher=str(tmp_path / "teacher" / "best.ckpt"), num_classes=1,
                           input_shape=tuple(student_input_shape(tmp_path)), task="regression", target_scale=(500.0, 40.0))
    assert type(system.distiller).__name__ == "RegressionKD"
    # weights_only round trip: the network alone predicts in the target's units (its scale travels in its weights).
    trained = load_trained(tmp_path / "teacher" / "best.ckpt")
    rebuilt = rebuild_data(trained)
    predicted = trained.network(rebuilt.test_x).squeeze(1)
    assert abs(predicted.mean().item() - rebuilt.test_y.mean().item()) < 20  # about 500, not about 0
    r2 = 1 - ((predicted - rebuilt.test_y) ** 2).mean() / rebuilt.test_y.var(unbiased=False)
    assert r2.item() == pytest.approx(teacher["test/r2"], abs=1e-4)
    # The report, with the predicted-against-true plot; predictions for a new CSV's rows.
    assert evaluate(["--teacher", str(tmp_path / "teacher" / "best.ckpt"), "--student", str(tmp_path / "student" / "best.ckpt"),
                     "--out_dir", str(tmp_path / "report"), "--latency_runs", "2"]) == 0
    report = json.loads((tmp_path / "report" / "compare.json").read_text())
    assert report["task"] == "regression" and report["models"][0]["r2"] == pytest.approx(teacher["test/r2"], abs=1e-5)
    assert "mse_to_teacher" in report["models"][1] and (tmp_path / "report" / "predicted_vs_true.png").is_file()
    rows = [line.split(",")[:3] for line in table.read_text().splitlines()]
    # A blank line inside the file: one output row per input row, numbered as the file's lines (it was
    # dropped before, "2 predictions" for 3 rows, and every later row number shifted).
    (tmp_path / "new.csv").write_text(table_text(rows[0], rows[1:2]) + "\n" + table_text(rows[0], rows[2:4]).split("\n", 1)[1])
    assert predict(["--model", str(tmp_path / "teacher" / "best.ckpt"), "--input", str(tmp_path / "new.csv"),
                    "--out", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "line,prediction,status" and len(lines) == 5 and 350 < float(lines[1].split(",")[1]) < 650
    assert lines[2].startswith("3,,blank row") and lines[3].split(",")[0] == "4" and lines[4].split(",")[0] == "5"


def student_input_shape(tmp_path):
    return load_checkpoint(tmp_path / "student" / "best.ckpt")["hyper_parameters"]["input_shape"]


def test_a_classification_method_on_a_regression_target_is_one_line(tmp_path, capsys):
    table = make_regression_table(tmp_path / "r.csv", rows=60)
    data = ["--data", "tabular", "--data.path", str(table), "--data.target", "y"]
    assert main(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "1", *data, *QUIET,
                 "--run_dir", str(tmp_path / "teacher")]) == 0
    code = main(["student", "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "teacher" / "best.ckpt"),
                 "--model.method", "kd", *data, *QUIET, "--run_dir", str(tmp_path / "student")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == ("error: the kd method is for classification; this data is regression: "
                                     "--model.method regression_kd")


@pytest.fixture(scope="module")
def regression_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    table = make_regression_table(root / "r.csv", rows=80)
    assert main(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "2", "--data", "tabular",
                 "--data.path", str(table), "--data.target", "y", *QUIET, "--run_dir", str(root / "teacher")]) == 0
    return table, root / "teacher" / "best.ckpt"


@pytest.mark.parametrize("name", [n for n in DISTILLERS.names() if "regression" in DISTILLERS.get(n).tasks])
def test_every_regression_method_trains_through_the_cli(name, regression_teacher, tmp_path):
    table, teacher = regression_teacher
    assert main(["student", "--model.model", "mlp_small", "--model.teacher", str(teacher), "--model.method", name,
                 "--trainer.max_epochs", "2", "--data", "tabular", "--data.path", str(table), "--data.target", "y",
                 *QUIET, "--run_dir", str(tmp_path / "student")]) == 0
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["method"] == name and np.isfinite(metrics["test/r2"]) and "teacher_test_r2" in metrics


def test_a_regression_student_compresses_and_its_onnx_files_predict_in_units(regression_teacher, tmp_path):
    pytest.importorskip("onnxruntime")
    from distill.compress import main as compress
    from distill.evaluate import main as evaluate

    _, teacher = regression_teacher
    out = tmp_path / "compressed"
    assert compress(["--ckpt", str(teacher), "--out_dir", str(out), "--latency_runs", "3", "--calibration", "32"]) == 0
    report = json.loads((out / "compress.json").read_text())
    assert report["figure"] == "r2" and {"r2", "mse_to_fp32", "r2_change_points"} <= set(report["artifacts"][0])
    fp32 = next(r for r in report["artifacts"] if r["format"] == "onnx fp32")
    assert fp32["mse_to_fp32"] < 1e-6 and json.loads((out / "teacher-ckpt.json").read_text())["task"] == "regression"
    assert evaluate(["--teacher", str(teacher), "--student", str(out / "teacher-ckpt.int8.onnx"), "--out_dir",
                     str(tmp_path / "report"), "--latency_runs", "2"]) == 0
    assert json.loads((tmp_path / "report" / "compare.json").read_text())["task"] == "regression"


def test_a_search_on_a_regression_table_optimizes_validation_r2(regression_teacher, tmp_path):
    pytest.importorskip("optuna")
    import yaml

    from distill.tune.cli import main as tune

    table, _ = regression_teacher
    fixed = {"model.model": "mlp_small", "trainer.max_epochs": 2, "trainer.enable_model_summary": False,
             "data": "tabular", "data.path": str(table), "data.target": "y"}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": fixed, "space": {"model.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}}))
    assert tune(["teacher", "--space", str(space), "--trials", "2", "--sampler", "random", "--out", str(tmp_path / "t")]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["objective"].startswith("best validation R²") and "val_r2" in summary["best"]
    assert "test_r2" in (tmp_path / "t" / "trials.csv").read_text().splitlines()[0]


def test_files_spreadsheets_write_are_read_as_the_same_table(tmp_path):
    # A "CSV UTF-8" save keeps a byte-order mark before the first name; European spreadsheets separate
    # with semicolons; both once gave a missing column. Latin-1 is named, not mis-read.
    plain = make_table(tmp_path / "plain.csv", rows=60, missing=False)
    text = plain.read_text()
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "semi.csv").write_text(text.replace(",", ";"))
    base = TabularDataModule(path=str(plain), target="label")
    for name in ("bom.csv", "semi.csv"):
        other = TabularDataModule(path=str(tmp_path / name), target="label")
        assert other.numeric_columns == base.numeric_columns and torch.equal(other.train_x, base.train_x)
        inputs, lines, blank = base.read_table_file(tmp_path / name)  # a model trained on one reads the other
        assert torch.equal(inputs[:3], base.read_table_file(plain)[0][:3]) and lines[0] == 2 and not blank
    (tmp_path / "latin.csv").write_bytes("x,label\n1,caf\xe9\n2,th\xe9\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"is not UTF-8 text \(byte 0xe9 at offset 13, e\.g\. latin-1"):
        TabularDataModule(path=str(tmp_path / "latin.csv"), target="label")


def test_artifacts_predict_with_the_table_gone_and_a_changed_table_is_never_re_split(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from distill.compress import main as compress
    from distill.evaluate import main as evaluate
    from distill.predict import main as predict

    table = make_table(tmp_path / "t.csv", rows=90, missing=False)
    run = tmp_path / "teacher"
    assert main(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "2", "--data", "tabular",
                 "--data.path", str(table), "--data.target", "label", *QUIET, "--run_dir", str(run)]) == 0
    assert compress(["--ckpt", str(run / "best.ckpt"), "--out_dir", str(tmp_path / "c"), "--latency_runs", "3",
                     "--calibration", "16"]) == 0
    rows = [line.split(",") for line in table.read_text().splitlines()]
    (tmp_path / "new.csv").write_text(table_text(rows[0], rows[1:6]))
    # A shuffled copy of the training file: its rebuilt split would put training rows in the test set
    # (92.98 -> 95.61 % before, silently). Refused in one line.
    (tmp_path / "t.csv").write_text(table_text(rows[0], rows[1:][::-1]))
    assert evaluate(["--teacher", str(run / "best.ckpt"), "--student", str(run / "best.ckpt"),
                     "--out_dir", str(tmp_path / "r"), "--latency_runs", "1"]) == 2
    assert "changed since the model was trained on it" in capsys.readouterr().err.strip().splitlines()[-1]
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "t.csv").write_text(table_text(rows[0], rows[1:]))  # the same bytes, in another folder
    assert evaluate(["--teacher", str(run / "best.ckpt"), "--student", str(run / "best.ckpt"), "--data_root",
                     str(moved), "--out_dir", str(tmp_path / "r2"), "--latency_runs", "1"]) == 0
    table.unlink()  # the training data gone: everything needed to predict travels in the artifacts
    for model in (run / "best.ckpt", tmp_path / "c" / "teacher-ckpt.onnx"):
        out = tmp_path / f"{model.suffix}.csv"
        assert predict(["--model", str(model), "--input", str(tmp_path / "new.csv"), "--out", str(out)]) == 0
    by_ckpt, by_onnx = ((tmp_path / name).read_text().splitlines() for name in (".ckpt.csv", ".onnx.csv"))
    assert len(by_ckpt) == 6 and [r.split(",")[1] for r in by_ckpt] == [r.split(",")[1] for r in by_onnx]
