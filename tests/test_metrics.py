import math

import pytest
import torch

from distill import metrics
from distill.tasks import get_task


def hand_made():
    # 4 samples, 3 classes; predictions: 0, 1, 1, 2 with the confidences below; labels 0, 1, 2, 2.
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.1, 0.7, 0.2], [0.1, 0.3, 0.6]])
    return probs.log(), torch.tensor([0, 1, 2, 2])


def test_accuracy_f1_nll_confusion_by_hand():
    logits, labels = hand_made()
    q = metrics.quality(logits, labels)
    assert q["acc"] == pytest.approx(3 / 4)
    assert q["top5"] is None  # only 3 classes
    # per class F1: class 0: P=1 R=1 -> 1; class 1: P=1/2 R=1 -> 2/3; class 2: P=1 R=1/2 -> 2/3
    assert q["per_class_f1"] == pytest.approx([1.0, 2 / 3, 2 / 3])
    assert q["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert q["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.2) + math.log(0.6)) / 4)
    assert q["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_regression_figures_by_hand():
    predicted, true = torch.tensor([2.0, 4.0, 7.0, 9.0]), torch.tensor([3.0, 5.0, 7.0, 5.0])
    q = metrics.regression_quality(predicted.unsqueeze(1), true)  # (N, 1) outputs, as a network gives them
    # errors -1, -1, 0, 4: MSE 18/4, MAE 6/4; the targets' mean 5, variance (4 + 0 + 4 + 0) / 4 = 2
    assert q["mse"] == pytest.approx(4.5) and q["mae"] == pytest.approx(1.5) and q["rmse"] == pytest.approx(4.5 ** 0.5)
    assert q["r2"] == pytest.approx(1 - 4.5 / 2.0)
    figures = get_task("regression").test_figures(predicted.unsqueeze(1), true)
    assert figures == pytest.approx({"test/mse": 4.5, "test/mae": 1.5, "test/r2": -1.25, "test/loss": 4.5})


def test_expected_calibration_error_by_hand():
    logits, labels = hand_made()
    # confidences 0.8 (right), 0.6 (right), 0.7 (wrong), 0.6 (right), each in its own 1/15-wide bin
    # except the two 0.6 ones: |0.8-1| + |0.7-0| + 2*|0.6-1| over 4 samples
    expected = (0.2 + 0.7 + 0.4 + 0.4) / 4
    assert metrics.quality(logits, labels)["ece"] == pytest.approx(expected, abs=1e-6)
    rel = metrics.reliability(logits, labels)
    assert sum(rel["count"]) == 4


def test_auroc_is_one_for_perfect_ranking_and_half_for_constant_scores():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    perfect = torch.nn.functional.one_hot(labels, 3).float() * 5
    assert metrics.quality(perfect, labels)["auroc"] == pytest.approx(1.0)
    assert metrics.quality(torch.zeros(6, 3), labels)["auroc"] == pytest.approx(0.5)


def test_top5_with_more_classes():
    labels = torch.tensor([0, 9])
    logits = torch.zeros(2, 10)
    logits[0, 0] = 1.0  # rank 1
    logits[1, :6] = torch.arange(6, 0, -1).float()  # label 9 ranks below 6 classes
    assert metrics.quality(logits, labels)["top5"] == pytest.approx(0.5)


def test_agreement():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert metrics.agreement(a, b) == pytest.approx(2 / 3)
