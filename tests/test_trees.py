"""Gradient-boosted tree teachers: fitted on the student's rows, saved as bytes, taught, evaluated, compressed, predicted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.checkpoint import load_checkpoint, load_trained
from distill.errors import UsageError
from distill.models import count_parameters, create_model
from distill.models.trees import LIBRARIES
from distill.train import main

pytest.importorskip("onnxmltools")
pytest.importorskip("onnxruntime")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false"]


def regression_table(path, rows=300, seed=0):
    """A target that steps with x (what trees model well) plus a colour's offset."""
    rng = np.random.default_rng(seed)
    lines = ["x,z,colour,y"]
    for _ in range(rows):
        x, z, colour = rng.uniform(0, 4), rng.normal(), rng.choice(["red", "blue"])
        lines.append(f"{x:.4f},{z:.4f},{colour},{100 + 20 * np.floor(x) + (5 if colour == 'red' else 0) + rng.normal():.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from tests.test_tabular import make_table

    root = tmp_path_factory.mktemp("trees")
    return {"root": root, "classification": (make_table(root / "c.csv"), "label"),
            "regression": (regression_table(root / "r.csv"), "y")}


def teacher(tables, task, library, run_dir, *extra):
    path, target = tables[task]
    return main(["teacher", "--data", "tabular", "--data.path", str(path), "--data.target", target,
                 "--model.model", library, "--model.model_kwargs", "{n_estimators: 200, early_stopping_rounds: 20}",
                 *QUIET, "--run_dir", str(run_dir), *extra])


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("library", list(LIBRARIES))
def test_a_tree_teacher_is_fitted_saved_self_contained_and_teaches_a_network(tables, tmp_path, library, task):
    pytest.importorskip(LIBRARIES[library])
    assert teacher(tables, task, library, tmp_path / "t") == 0
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    figure = "test/acc" if task == "classification" else "test/r2"
    assert metrics["model"] == library and 0 < metrics["boosting_rounds"] <= 200 and metrics["steps"] == 0
    assert metrics["trees"] == metrics["boosting_rounds"] * (3 if task == "classification" else 1)  # a tree per class
    assert metrics[figure] > (0.8 if task == "classification" else 0.9)  # the tables are easy for trees
    assert metrics["onnx_max_difference"] < 1e-4
    native = tmp_path / "t" / ("lightgbm.txt" if library == "lightgbm" else "xgboost.json")
    assert native.stat().st_size > 0 and (tmp_path / "t" / "model.onnx").stat().st_size > 0
    assert json.loads((tmp_path / "t" / "model.json").read_text())["model"] == library  # the ONNX file's description
    assert f"model: {library}" in (tmp_path / "t" / "config.yaml").read_text()  # the run, replayable with --config
    # The checkpoint is tensors and plain values; rebuilt from it, the trees give the test figure again.
    checkpoint = load_checkpoint(tmp_path / "t" / "best.ckpt")
    assert checkpoint["state_dict"]["model.network.native_model" if task == "regression" else
                                    "model.native_model"].dtype == torch.uint8
    trained = load_trained(tmp_path / "t" / "best.ckpt")
    assert count_parameters(trained.network) == metrics["params"] > 0
    # ... and teaches a network with it: the teacher's figure in the student's metrics is its own.
    path, target = tables[task]
    assert main(["student", "--data", "tabular", "--data.path", str(path), "--data.target", target,
                 "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "t" / "best.ckpt"),
                 "--trainer.max_epochs", "2", *QUIET, "--run_dir", str(tmp_path / "s")]) == 0
    student = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert student[f"teacher_{figure.replace('/', '_')}"] == pytest.approx(metrics[figure], abs=1e-6)


def test_the_deployed_onnx_file_gives_what_the_checkpoint_gives(tables, tmp_path):
    """Log-probabilities for classes; a regression value in the target's units (the scale added to the graph)."""
    import onnxruntime as ort

    from distill.export import export_onnx

    for task in ("classification", "regression"):
        assert teacher(tables, task, "lightgbm", tmp_path / task) == 0
        trained = load_trained(tmp_path / task / "best.ckpt")
        network, shape = trained.network, tuple(trained.hparams["input_shape"])
        path = export_onnx(network, shape, tmp_path / f"{task}.onnx")
        rows = torch.randn(16, *shape)
        file = ort.InferenceSession(str(path)).run(["logits"], {"input": rows.numpy()})[0]
        np.testing.assert_allclose(file, network(rows).numpy(), rtol=1e-5, atol=1e-4)


def test_compress_times_the_trees_in_their_library_and_as_onnx(tables, tmp_path):
    from distill.compress import compress

    assert teacher(tables, "classification", "lightgbm", tmp_path / "t") == 0
    trees = json.loads((tmp_path / "t" / "metrics.json").read_text())
    path, target = tables["classification"]
    # the student's rows are min-max scaled and ordinal, the trees' z-scored and one-hot: each reads its own
    assert main(["student", "--data", "tabular", "--data.path", str(path), "--data.target", target,
                 "--data.scaling", "minmax", "--data.encoding", "ordinal",
                 "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "t" / "best.ckpt"),
                 "--trainer.max_epochs", "2", *QUIET, "--run_dir", str(tmp_path / "s")]) == 0
    report = compress([tmp_path / "s" / "best.ckpt"], tmp_path / "t" / "best.ckpt", tmp_path / "c", latency_runs=5)
    rows = {r["name"]: r for r in report["artifacts"]}
    native, onnx = rows["teacher (lightgbm)"], rows["teacher (ONNX fp32)"]
    assert native["format"] == "lightgbm native" and native["acc"] == onnx["acc"]
    assert native["acc"] == pytest.approx(trees["test/acc"], abs=1e-6)
    assert "teacher (ONNX int8)" not in rows  # thresholds are compared, not multiplied: nothing to quantize
    assert {"latency_ratio", "onnx_latency_ratio"} <= set(report["headline"])


def test_trees_are_refused_where_they_cannot_go(tables, tmp_path, capsys):
    from distill.modules import TeacherModule

    def said(code: int) -> str:
        assert code == 2
        return capsys.readouterr().err

    path, target = tables["classification"]
    assert "not a student" in said(main(["student", "--data", "tabular", "--data.path", str(path), "--data.target",
                                         target, "--model.model", "lightgbm", "--model.teacher", "registry:mlp_small",
                                         *QUIET, "--run_dir", str(tmp_path / "s")]))
    assert "validation rows" in said(teacher(tables, "classification", "lightgbm", tmp_path / "v",
                                             "--data.val_fraction", "0"))
    assert "nothing to resume" in said(teacher(tables, "classification", "lightgbm", tmp_path / "r",
                                               "--ckpt_path", "last"))
    assert teacher(tables, "classification", "lightgbm", tmp_path / "again") == 0
    from distill.compress import main as compress  # the library's own file given where the checkpoint goes
    assert "not a checkpoint (not a file written by torch.save); beside it: best.ckpt and model.onnx" in said(
        compress(["--ckpt", str(tmp_path / "again" / "lightgbm.txt"), "--out_dir", str(tmp_path / "c")]))
    assert teacher(tables, "regression", "lightgbm", tmp_path / "values") == 0
    assert "is a regression model (one value) but the data has 3 classes" in said(main(
        ["student", "--data", "tabular", "--data.path", str(path), "--data.target", target, "--model.model",
         "mlp_small", "--model.teacher", str(tmp_path / "values" / "best.ckpt"), *QUIET,
         "--run_dir", str(tmp_path / "vs")]))
    again = said(teacher(tables, "classification", "lightgbm", tmp_path / "again"))  # fitted in one pass: no resume
    assert "pass --overwrite true to replace it or --run_dir DIR" in again and "ckpt_path" not in again
    with pytest.raises(UsageError, match="fits table rows"):  # images
        TeacherModule(model="lightgbm", num_classes=3, input_shape=(1, 8, 8)).fit_rows(object(), seed=0)
    assert "could not fit these rows with these settings" in said(teacher(
        tables, "classification", "lightgbm", tmp_path / "lr", "--model.model_kwargs", "{learning_rate: -1}"))
    rows = np.zeros((6, 4), dtype=np.float32)
    with pytest.raises(UsageError, match="class 'emu' \\(of 3\\) has none"):  # its probabilities would lack a column
        create_model("lightgbm", num_classes=3, in_channels=4).fit((rows, np.array([0, 1] * 3)),
                                                                   (rows, np.array([0, 1] * 3)), 0, 1,
                                                                   ["cat", "dog", "emu"])
    few = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="found no split worth making in these 30 training rows"):
        create_model("lightgbm", num_classes=2, in_channels=4).fit((few, np.arange(30) % 2), (few, np.arange(30) % 2),
                                                                   0, 1)
    unfitted = create_model("lightgbm", num_classes=3, in_channels=4)
    with pytest.raises(UsageError, match="not fitted"):
        unfitted(torch.zeros(2, 4))


def test_a_teacher_trained_on_another_split_of_the_same_table_is_refused(tables, tmp_path, capsys):
    """Its training rows would be among the student's test rows: a flattering test figure with no word."""
    assert teacher(tables, "classification", "lightgbm", tmp_path / "t", "--data.val_fraction", "0.1") == 0
    path, target = tables["classification"]
    code = main(["student", "--data", "tabular", "--data.path", str(path), "--data.target", target,
                 "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "t" / "best.ckpt"),
                 "--trainer.max_epochs", "1", *QUIET, "--run_dir", str(tmp_path / "s")])
    assert code == 2 and "another split of this table (val_fraction: 0.1 there, 0.15 here)" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_written_onnx_file_teaches_and_is_evaluated_alone_or_by_what_the_student_recorded(tables, tmp_path, task):
    """model.onnx with its description reads the student's rows as its own fit wrote them (here the student
    min-max scales and codes categories as integers); the same file copied without it, as another framework's
    file would come, is rebuilt by distill.evaluate from the settings the student recorded."""
    import shutil

    from distill.evaluate import evaluate

    assert teacher(tables, task, "lightgbm", tmp_path / "t") == 0
    figure = "acc" if task == "classification" else "r2"
    trees = json.loads((tmp_path / "t" / "metrics.json").read_text())[f"test/{figure}"]
    path, target = tables[task]
    data = ["--data", "tabular", "--data.path", str(path), "--data.target", target]
    onnx = tmp_path / "t" / "model.onnx"
    assert main(["student", *data, "--data.scaling", "minmax", "--data.encoding", "ordinal", "--model.model",
                 "mlp_small", "--model.teacher", str(onnx), "--trainer.max_epochs", "1", *QUIET,
                 "--run_dir", str(tmp_path / "adapted")]) == 0
    adapted = json.loads((tmp_path / "adapted" / "metrics.json").read_text())
    assert adapted[f"teacher_test_{figure}"] == pytest.approx(trees, abs=1e-5)  # a value in units, not z-scores
    own_params = json.loads((tmp_path / "t" / "metrics.json").read_text())["params"]
    assert adapted["teacher_params"] == own_params  # the file's constants (log floor, target scale) are not weights
    report = evaluate(onnx, [tmp_path / "adapted" / "best.ckpt"], tmp_path / "ea", latency_runs=3)
    assert report["models"][0][figure] == pytest.approx(trees, abs=1e-5)

    foreign = tmp_path / "foreign.onnx"
    shutil.copy(onnx, foreign)  # no description beside it
    assert main(["student", *data, "--model.model", "mlp_small", "--model.teacher", str(foreign),
                 "--trainer.max_epochs", "1", *QUIET, "--run_dir", str(tmp_path / "s")]) == 0
    student = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert student[f"teacher_test_{figure}"] == pytest.approx(trees, abs=1e-5)
    report = evaluate(foreign, [tmp_path / "s" / "best.ckpt"], tmp_path / "e", latency_runs=3)
    assert report["models"][0][figure] == pytest.approx(trees, abs=1e-5)
    assert report["models"][0]["weights_bytes"] >= foreign.stat().st_size
