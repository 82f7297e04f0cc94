"""Every registered task answers the whole Task interface: a new task is tested by registering it."""

import pytest
import torch
from torch import nn

from distill.errors import UsageError
from distill.tasks import TASKS, Task, get_task


def outputs_and_labels(task: Task, n: int = 12, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor, int]:
    torch.manual_seed(0)
    width = 1 if task.default_method == "regression_kd" else classes
    outputs = torch.randn(n, width)
    labels = torch.randn(n) if width == 1 else torch.arange(n) % classes
    return outputs, labels, width


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_answers_every_question(name, tmp_path):
    task = get_task(name)
    assert task.name == name and task.monitor == f"val/{task.headline}"
    outputs, labels, width = outputs_and_labels(task)
    task.check_outputs(width)
    network = task.wrap(nn.Linear(4, width), (2.0, 3.0))
    assert network(torch.zeros(2, 4)).shape == (2, width)
    metrics = task.metrics(width)
    metrics.update(task.scored(outputs), labels)
    assert f"{task.headline}" in metrics.compute()
    assert torch.isfinite(task.supervised_loss(outputs, labels, network, 0.0))
    assert torch.isfinite(task.eval_loss(outputs, labels)) and task.predicted(outputs).shape == (12,)
    figures = task.test_figures(outputs, labels)
    assert f"test/{task.headline}" in figures and "test/loss" in figures
    quality = task.quality(outputs, labels)
    assert all(figure in quality for figure in task.figures)
    key, value = task.closeness(outputs, outputs)
    assert key and value == pytest.approx(1.0 if key == "agreement_with" else 0.0)
    entry = {**quality, f"{key}_teacher": value, f"{task.headline}_change_points": 0.0, f"{key}_fp32": value}
    assert len(task.report_row(entry)) == len(task.report_columns)
    assert len(task.artifact_cells(entry)) == len(task.artifact_columns)
    title, shown = task.kept_text(task.kept(entry, entry))
    assert title and shown
    summary = {f"test/{k}": v for k, v in quality.items() if isinstance(v, float)}
    summary[f"best_val_{task.headline}"] = quality[task.headline]
    assert len(task.summary_row(summary)) == len(task.summary_columns)
    assert task.summary_kept(summary, summary) and task.shown(0.5)
    floor, answer = task.chance(labels)
    assert 0 <= floor <= 1 and answer  # the figure of an answer that ignores the inputs, and that answer
    rows = task.prediction_rows(outputs, ["a", "b", "c"], 2)
    assert len(rows) == 12 and set(rows[0]) == set(task.prediction_header(2))
    cells = ["1.5", "2.5", "1.5", "4"]
    encoded, classes = task.encode_targets(cells, "y", [2, 3, 5, 6])
    assert task.output_width(classes) == (len(classes) if task.has_classes else 1)
    assert task.target_tensor(encoded).shape == (4,) and len(encoded) == 4
    fitted = task.fit_targets(encoded)
    scale = task.target_scale(fitted)
    assert scale is None or (scale[0] == pytest.approx(2.375) and scale[1] > 0)
    entries = [{"name": "m", **quality}]
    assert all(path is None or path.is_file() for path in task.plots(entries, [(outputs, labels)], ["a", "b", "c"],
                                                                       tmp_path).values())


def test_a_regression_has_one_output_and_an_unknown_task_lists_the_known_ones():
    with pytest.raises(UsageError, match="one output"):
        get_task("regression").check_outputs(3)
    with pytest.raises(UsageError, match="classification, regression"):
        get_task("multilabel")
    assert get_task(None).name == "classification"  # checkpoints older than tasks
    with pytest.raises(UsageError, match="column y, line 7: 'n/a' is not a number"):  # the file's own line
        get_task("regression").encode_targets(["1", "n/a"], "y", [2, 7])
    with pytest.raises(UsageError, match="column y, line 3: 'inf' is not a finite number"):
        get_task("regression").encode_targets(["1", "inf"], "y", [2, 3])
    with pytest.raises(UsageError, match="takes 1 value"):
        get_task("classification").encode_targets(["a", "a"], "y", [2, 3])
