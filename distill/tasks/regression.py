"""Regression: one number per sample, learned as a z-score, judged by R² in the target's units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from distill import metrics
from distill.errors import UsageError
from distill.models.target_scale import TargetScale
from distill.tasks.base import Task, number


class Regression(Task):
    """The network has one output and learns the z-scored target (mean and std of the training targets);
    ``TargetScale`` wraps it so every checkpoint, export and prediction is in the target's units."""

    name = "regression"
    headline = "r2"
    headline_label = "R²"
    loss_term = "mse"
    default_method = "regression_kd"
    output_kind = "values"
    figures = ("r2", "mse", "mae")
    report_columns = ("MSE", "RMSE", "MAE", "R²", "MSE to teacher")
    artifact_columns = ("R²", "Δ pts", "MSE to fp32")
    artifact_note = ("Δ pts: change of R² × 100 against the same network in PyTorch; MSE to fp32: mean squared "
                     "distance to its predictions, in the target's units; size ×: file size against its PyTorch weights.")
    summary_columns = ("MSE", "MAE", "R²", "val R²")

    has_classes = False
    min_eval_rows = 2  # R² of one row is undefined

    def encode_targets(self, values: list[str], column: str, lines: list[int]) -> tuple[np.ndarray, tuple[str, ...]]:
        labels = np.empty(len(values), dtype=np.float32)
        for i, (value, line) in enumerate(zip(values, lines)):
            try:
                labels[i] = float(value)
            except ValueError:
                raise UsageError(f"column {column}, line {line}: {value!r} is not a number") from None
            if not np.isfinite(labels[i]):  # else: "training diverged" and a half-written run, far from the cause
                raise UsageError(f"column {column}, line {line}: {value!r} is not a finite number; a target must be")
        return labels, ()

    def target_tensor(self, labels: np.ndarray) -> Tensor:
        return torch.from_numpy(labels)

    missing_label = float("nan")

    def labelled(self, labels: Tensor) -> Tensor:
        return ~torch.isnan(labels)

    def teacher_labelled(self, labels: Tensor, teacher: Tensor) -> Tensor:
        return torch.where(self.labelled(labels), labels, teacher.squeeze(1).to(labels.dtype))  # its prediction, in units

    def fit_targets(self, labels: np.ndarray) -> dict[str, float]:
        # the networks learn z-scored targets; predictions come back in units
        return {"target_mean": float(labels.mean()), "target_std": float(labels.std()) or 1.0}

    def target_scale(self, fitted: dict[str, Any]) -> tuple[float, float] | None:
        return fitted["target_mean"], fitted["target_std"]

    def output_width(self, classes: tuple[str, ...]) -> int:
        return 1

    def check_outputs(self, num_classes: int) -> None:
        if num_classes != 1:
            raise UsageError(f"a regression network has one output, got num_classes={num_classes}")

    def wrap(self, network: nn.Module, target_scale: tuple[float, float] | list[float] | None) -> nn.Module:
        mean, std = target_scale if target_scale is not None else (0.0, 1.0)
        return TargetScale(network, mean, std)

    def metrics(self, num_classes: int) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})

    def learned(self, values: Tensor, network: nn.Module) -> Tensor:
        assert isinstance(network, TargetScale)
        return network.standardize(values)

    def supervised_loss(self, outputs: Tensor, labels: Tensor, network: nn.Module, label_smoothing: float) -> Tensor:
        return F.mse_loss(self.learned(outputs.squeeze(1), network), self.learned(labels, network))

    def eval_loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        return F.mse_loss(outputs.squeeze(1), labels)

    def scored(self, outputs: Tensor) -> Tensor:
        return outputs.squeeze(1)  # (B,)

    def predicted(self, outputs: Tensor) -> Tensor:
        return outputs.squeeze(1)  # (B,)

    def test_figures(self, outputs: Tensor, labels: Tensor) -> dict[str, float]:
        q = metrics.regression_quality(outputs, labels)
        return {"test/mse": q["mse"], "test/mae": q["mae"], "test/r2": q["r2"], "test/loss": q["mse"]}

    def quality(self, outputs: Tensor, labels: Tensor) -> dict[str, Any]:
        return metrics.regression_quality(outputs, labels)

    def closeness(self, outputs: Tensor, reference: Tensor) -> tuple[str, float]:
        return "mse_to", metrics.regression_quality(outputs, reference)["mse"]  # in the target's units

    def kept(self, entry: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
        return {"mse": entry["mse"] / base["mse"]}

    def kept_text(self, ratios: dict[str, Any]) -> tuple[str, str]:
        return "test MSE ratio", f"{ratios['mse']:.2f}x"  # the student's MSE over the teacher's

    def report_row(self, entry: dict[str, Any]) -> list[str]:
        to_teacher = entry.get("mse_to_teacher")
        return [f"{entry['mse']:.4g}", f"{entry['rmse']:.4g}", f"{entry['mae']:.4g}", f"{entry['r2']:.3f}",
                "-" if to_teacher is None else f"{to_teacher:.4g}"]

    def report_note(self) -> str:
        return ("MSE, RMSE and MAE in the target's units; R² = 1 - MSE / variance of the test targets. "
                "MSE to teacher: mean squared distance to the teacher's predictions. Latency: median of repeated "
                "runs after warm-up.")

    def plots(self, entries: list[dict[str, Any]], outputs: list[tuple[Tensor, Tensor]], classes: list[str],
              out_dir: Path) -> dict[str, Path | None]:
        from distill import plots

        pairs = [(predicted.reshape(-1), labels) for predicted, labels in outputs]
        return {"predicted_vs_true": plots.predicted_vs_true(entries, pairs, out_dir / "predicted_vs_true.png")}

    def artifact_cells(self, row: dict[str, Any]) -> list[str]:
        return [f"{row['r2']:.4f}", f"{row['r2_change_points']:+.2f}", f"{row['mse_to_fp32']:.3g}"]

    def summary_row(self, m: dict[str, Any]) -> list[str]:
        return [number(m.get("test/mse")), number(m.get("test/mae")), number(m.get("test/r2"), 3),
                number(m.get("best_val_r2"), 3)]

    def summary_kept(self, student: dict[str, Any], teacher: dict[str, Any]) -> str:
        return f"test R² {float(student['test/r2']):.3f} against the teacher's {float(teacher['test/r2']):.3f}"

    def shown(self, value: float) -> str:
        return f"{value:.4f}"

    def chance(self, labels: Tensor) -> tuple[float, str]:
        return 0.0, "always the mean target"  # R² of a constant answer: 0 at best

    def samples(self, input_rank: int) -> str:
        return "rows"

    def prediction_header(self, top_k: int) -> list[str]:
        return ["prediction"]

    def prediction_rows(self, outputs: Tensor, class_names: list[str], top_k: int) -> list[dict[str, Any]]:
        return [{"prediction": round(v, 6)} for v in outputs.float()[:, 0].tolist()]
