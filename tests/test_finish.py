"""What a finished stage says about its teacher."""

from __future__ import annotations

import warnings

import pytest
import torch

from distill.finish import warn_if_teacher_guesses
from distill.tasks import get_task


def warned(figure: float, labels: torch.Tensor, task: str = "classification") -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_teacher_guesses("t.onnx", figure, labels, get_task(task))
    return any("near chance" in str(w.message) for w in caught)


@pytest.mark.parametrize("accuracy, labels, said", [
    (0.74, torch.tensor([1] * 69 + [0] * 31), False),  # an honest binary teacher on a skewed table (randhie)
    (0.70, torch.tensor([1] * 69 + [0] * 31), True),  # hardly above answering 1 every time
    (0.55, torch.tensor([0, 1] * 50), False),
    (0.51, torch.tensor([0, 1] * 50), True),
    (0.20, torch.arange(10).repeat(10), False),
    (0.14, torch.arange(10).repeat(10), True),  # ten balanced classes: a tenth is chance
])
def test_a_teacher_is_said_to_guess_against_its_tests_most_common_class(accuracy, labels, said):
    assert warned(accuracy, labels) is said


def test_a_regression_teacher_no_better_than_the_mean_is_said_to_guess():
    targets = torch.linspace(0, 1, 50)
    assert warned(-3.13, targets, "regression") and warned(0.04, targets, "regression")
    assert not warned(0.5, targets, "regression")
