"""Quality metrics of a classifier's or a regressor's test-set outputs (torchmetrics, functional form)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)
from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error, r2_score

ECE_BINS = 15


def quality(logits: Tensor, labels: Tensor) -> dict[str, Any]:
    """Every quality figure of the comparison report.

    Args:
        logits: (N, K) scores for the whole test set.
        labels: (N,) true classes.

    Returns:
        Plain values: ``acc``, ``top5`` (None when K <= 5), ``f1`` (macro), ``per_class_f1`` (K floats),
        ``auroc`` (macro, one-vs-rest), ``ece`` (15 equal-width bins), ``nll``, ``confusion`` (K x K ints,
        rows = true class).
    """
    k = logits.shape[1]
    probs = logits.float().softmax(dim=1)  # (N, K)
    return {
        "acc": multiclass_accuracy(probs, labels, k, average="micro").item(),
        "top5": multiclass_accuracy(probs, labels, k, average="micro", top_k=5).item() if k > 5 else None,
        "f1": multiclass_f1_score(probs, labels, k, average="macro").item(),
        "per_class_f1": multiclass_f1_score(probs, labels, k, average="none").tolist(),
        "auroc": multiclass_auroc(probs, labels, k, average="macro").item(),
        "ece": multiclass_calibration_error(probs, labels, k, n_bins=ECE_BINS, norm="l1").item(),
        "nll": F.cross_entropy(logits.float(), labels).item(),
        "confusion": multiclass_confusion_matrix(probs, labels, k).tolist(),
    }


def regression_quality(predictions: Tensor, targets: Tensor) -> dict[str, float]:
    """Every quality figure of a regression report, in the target's units.

    Args:
        predictions: (N,) or (N, 1) predicted values for the whole test set.
        targets: (N,) true values.

    Returns:
        ``mse``, ``rmse``, ``mae`` and ``r2`` (1 - MSE / variance of the targets).
    """
    predictions, targets = predictions.float().reshape(-1), targets.float().reshape(-1)
    mse = mean_squared_error(predictions, targets).item()
    return {"mse": mse, "rmse": mse ** 0.5, "mae": mean_absolute_error(predictions, targets).item(),
            "r2": r2_score(predictions, targets).item()}


def agreement(logits_a: Tensor, logits_b: Tensor) -> float:
    """Fraction of samples on which two models' top-1 predictions agree."""
    return (logits_a.argmax(1) == logits_b.argmax(1)).float().mean().item()


def reliability(logits: Tensor, labels: Tensor, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per confidence bin: mean confidence, accuracy and sample count (for the reliability diagram)."""
    probs = logits.float().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)  # (N,), (N,)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    which = torch.bucketize(confidence, edges[1:-1], right=True)  # bin index in [0, bins)
    counts = torch.bincount(which, minlength=bins).float()
    conf_sum = torch.bincount(which, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(which, weights=correct, minlength=bins)
    safe = counts.clamp(min=1)
    return {"confidence": (conf_sum / safe).tolist(), "accuracy": (acc_sum / safe).tolist(),
            "count": counts.tolist(), "edges": edges.tolist()}
