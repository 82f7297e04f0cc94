"""Synthetic rows for a teacher to label (--data.augment): made from training rows only, labelled by the teacher."""

from __future__ import annotations

import json

import pytest
import torch

from distill.data import TabularDataModule
from distill.data.synthetic import gaussian, munge, nearest_neighbours
from distill.errors import UsageError
from distill.train import main
from tests.test_tabular import make_table

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false"]


def encoded_rows(n=40, seed=0):
    """Two numbers, then a one-hot block of three categories."""
    generator = torch.Generator().manual_seed(seed)
    numbers = torch.randn(n, 2, generator=generator)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=generator), 3).float()
    return torch.cat([numbers, onehot], dim=1)


def test_nearest_neighbours_are_the_closest_other_row():
    rows = torch.tensor([[0.0], [0.1], [5.0], [5.3]])
    assert nearest_neighbours(rows).tolist() == [1, 0, 3, 2]


def test_munge_moves_attributes_toward_the_neighbour_and_keeps_blocks_whole():
    rows, blocks = encoded_rows(), [(2, 3)]
    made = munge(rows, blocks, factor=3, swap=0.5, seed=1)
    assert made.shape == (120, 5)
    assert torch.equal(made[:, 2:].sum(dim=1), torch.ones(120))  # still one category per row
    assert torch.equal(made, munge(rows, blocks, factor=3, swap=0.5, seed=1))  # the same rows for the same seed
    partner = rows[nearest_neighbours(rows)]
    every = munge(rows, blocks, factor=1, swap=1.0, spread=1e9, seed=0)  # every attribute moved, no spread
    torch.testing.assert_close(every, partner)
    none_moved = munge(rows, blocks, factor=1, swap=1e-9, seed=0)
    torch.testing.assert_close(none_moved, rows)
    with pytest.raises(UsageError, match="swap probability"):
        munge(rows, blocks, factor=1, swap=0.0)


def test_gaussian_jitters_numbers_only():
    rows = encoded_rows(200)
    made = gaussian(rows, [(2, 3)], factor=2, noise=0.1, seed=0)
    assert made.shape == (400, 5) and torch.equal(made[:, 2:], rows[:, 2:].repeat(2, 1))
    moved = (made[:200, :2] - rows[:, :2]).std(dim=0) / rows[:, :2].std(dim=0)
    assert torch.all((moved > 0.07) & (moved < 0.13))


@pytest.mark.parametrize("maker", ["munge", "gaussian"])
def test_the_data_adds_unlabelled_rows_to_training_only(tmp_path, maker):
    path = make_table(tmp_path / "t.csv")
    plain = TabularDataModule(path=str(path), target="label")
    data = TabularDataModule(path=str(path), target="label", augment=maker, augment_factor=2)
    data.setup("fit")
    real = len(plain.train_set)
    assert data.synthetic_rows == 2 * real and len(data.train_set) == 3 * real
    assert data.num_training_samples() == plain.num_training_samples() + 2 * real  # the cache labels them too
    synthetic = data.train_set.indices[real:]
    assert torch.all(data.train_y[synthetic] == -1) and torch.all(data.train_y[data.train_set.indices[:real]] >= 0)
    assert torch.equal(data.val_set.indices, plain.val_set.indices) and torch.equal(data.test_x, plain.test_x)
    assert torch.equal(data.labelled_rows("train")[0], plain.labelled_rows("train")[0])
    assert data.fingerprint() != plain.fingerprint()  # a teacher cache of other rows is not reused
    with pytest.raises(UsageError, match="augment_factor"):
        TabularDataModule(path=str(path), target="label", augment=maker, augment_factor=0)


@pytest.fixture(scope="module")
def tree_teacher(tmp_path_factory):
    pytest.importorskip("lightgbm")
    pytest.importorskip("onnxmltools")
    root = tmp_path_factory.mktemp("synthetic")
    path = make_table(root / "t.csv")
    assert main(["teacher", "--data", "tabular", "--data.path", str(path), "--data.target", "label",
                 "--model.model", "lightgbm", "--model.model_kwargs", "{n_estimators: 100, early_stopping_rounds: 10}",
                 *QUIET, "--run_dir", str(root / "teacher")]) == 0
    return {"csv": path, "ckpt": root / "teacher" / "best.ckpt", "root": root}


def test_a_student_learns_on_rows_the_teacher_labels_and_is_scored_on_real_rows(tree_teacher, tmp_path):
    def student(run_dir, *extra):
        return main(["student", "--data", "tabular", "--data.path", str(tree_teacher["csv"]), "--data.target", "label",
                     "--model.model", "mlp_small", "--model.teacher", str(tree_teacher["ckpt"]),
                     "--trainer.max_epochs", "2", *QUIET, "--run_dir", str(run_dir), *extra])

    assert student(tmp_path / "plain") == 0
    assert student(tmp_path / "munge", "--data.augment", "munge", "--data.augment_factor", "3") == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    munged = json.loads((tmp_path / "munge" / "metrics.json").read_text())
    assert munged["steps"] > 3 * plain["steps"]  # four times the rows per epoch
    assert munged["teacher_test_acc"] == plain["teacher_test_acc"]  # the same real test rows
    assert 0 < munged["test/acc"] <= 1


def test_a_stage_without_a_teacher_refuses_synthetic_rows(tree_teacher, tmp_path, capsys):
    code = main(["teacher", "--data", "tabular", "--data.path", str(tree_teacher["csv"]), "--data.target", "label",
                 "--model.model", "mlp_small", "--data.augment", "munge", *QUIET, "--run_dir", str(tmp_path / "t")])
    assert code == 2 and "labelled by a teacher" in capsys.readouterr().err
    code = main(["teacher", "--data", "tabular", "--data.path", str(tree_teacher["csv"]), "--data.target", "label",
                 "--model.model", "lightgbm", "--data.augment", "munge", *QUIET, "--run_dir", str(tmp_path / "l")])
    assert code == 2 and "labelled by a teacher" in capsys.readouterr().err


def test_synthetic_regression_rows_take_the_teachers_value(tmp_path):
    from distill.tasks import get_task

    task = get_task("regression")
    labels = torch.tensor([1.0, float("nan"), 3.0])
    assert task.teacher_labelled(labels, torch.tensor([[9.0], [7.0], [9.0]])).tolist() == [1.0, 7.0, 3.0]
    classes = get_task("classification")
    assert classes.teacher_labelled(torch.tensor([2, -1]), torch.tensor([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0]])).tolist() == [2, 0]


def test_a_regression_student_learns_on_synthetic_rows_the_trees_label(tmp_path):
    pytest.importorskip("lightgbm")
    pytest.importorskip("onnxmltools")
    from tests.test_trees import regression_table

    path = regression_table(tmp_path / "r.csv")
    table = ["--data", "tabular", "--data.path", str(path), "--data.target", "y"]
    assert main(["teacher", *table, "--model.model", "lightgbm", "--model.model_kwargs",
                 "{n_estimators: 100, early_stopping_rounds: 10}", *QUIET, "--run_dir", str(tmp_path / "t")]) == 0
    assert main(["student", *table, "--model.model", "mlp_small", "--model.teacher", str(tmp_path / "t" / "best.ckpt"),
                 "--data.augment", "munge", "--data.augment_factor", "2", "--trainer.max_epochs", "2", *QUIET,
                 "--run_dir", str(tmp_path / "s")]) == 0
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["method"] == "regression_kd" and metrics["teacher_test_r2"] > 0.9
    assert torch.isfinite(torch.tensor(metrics["test/r2"]))
