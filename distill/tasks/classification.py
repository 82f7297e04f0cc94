"""Classification: one class per sample, cross-entropy on logits (B, K), judged by accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from distill import metrics
from distill.errors import UsageError
from distill.tasks.base import Task, percent


class Classification(Task):
    name = "classification"
    headline = "acc"
    headline_label = "accuracy"
    loss_term = "ce"
    default_method = "kd"
    output_kind = "logits"
    figures = ("acc", "f1")
    report_columns = ("acc %", "top-5 %", "F1 %", "AUROC %", "ECE %", "NLL", "agree %")
    artifact_columns = ("acc %", "Δ pts", "agree %")
    artifact_note = ("Δ pts: accuracy change against the same network in PyTorch; agree: top-1 agreement with it; "
                     "size ×: file size against its PyTorch weights.")
    plot_scale = 100.0
    summary_columns = ("acc %", "F1 %", "val acc %")

    def encode_targets(self, values: list[str], column: str, lines: list[int]) -> tuple[np.ndarray, tuple[str, ...]]:
        classes = tuple(sorted(set(values)))
        if len(classes) < 2:
            raise UsageError(f"target {column} takes {len(classes)} value(s); classification needs 2 or more")
        index = {name: i for i, name in enumerate(classes)}
        return np.array([index[v] for v in values]), classes

    def target_tensor(self, labels: np.ndarray) -> Tensor:
        return torch.from_numpy(labels).long()

    def teacher_labelled(self, labels: Tensor, teacher: Tensor) -> Tensor:
        return torch.where(self.labelled(labels), labels, teacher.argmax(dim=1))  # its most likely class

    def check_outputs(self, num_classes: int) -> None:
        if num_classes < 2:
            raise UsageError(f"a classifier scores at least 2 classes, got num_classes={num_classes} "
                             "(a numeric target is a regression: task='regression')")

    def metrics(self, num_classes: int) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro"),
                                 "f1": MulticlassF1Score(num_classes, average="macro")})

    def supervised_loss(self, outputs: Tensor, labels: Tensor, network: nn.Module, label_smoothing: float) -> Tensor:
        return F.cross_entropy(outputs, labels, label_smoothing=label_smoothing)

    def eval_loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(outputs, labels)

    def predicted(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(dim=1)  # (B,)

    def test_figures(self, outputs: Tensor, labels: Tensor) -> dict[str, float]:
        q = metrics.quality(outputs, labels)
        return {"test/acc": q["acc"], "test/f1": q["f1"], "test/loss": q["nll"]}

    def quality(self, outputs: Tensor, labels: Tensor) -> dict[str, Any]:
        return {**metrics.quality(outputs, labels), "reliability": metrics.reliability(outputs, labels)}

    def closeness(self, outputs: Tensor, reference: Tensor) -> tuple[str, float]:
        return "agreement_with", metrics.agreement(outputs, reference)  # top-1 agreement

    def kept(self, entry: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
        return {"accuracy_retained": entry["acc"] / base["acc"]}

    def kept_text(self, ratios: dict[str, Any]) -> tuple[str, str]:
        return "accuracy retained", f"{100 * ratios['accuracy_retained']:.1f}%"

    def report_row(self, entry: dict[str, Any]) -> list[str]:
        return [percent(entry["acc"]), percent(entry["top5"]), percent(entry["f1"]), percent(entry["auroc"]),
                percent(entry["ece"]), f"{entry['nll']:.3f}", percent(entry.get("agreement_with_teacher"))]

    def report_note(self) -> str:
        return ("ECE: expected calibration error, 15 equal-width bins. Latency: median of repeated runs "
                "after warm-up. agree: top-1 agreement with the teacher.")

    def plots(self, entries: list[dict[str, Any]], outputs: list[tuple[Tensor, Tensor]], classes: list[str],
              out_dir: Path) -> dict[str, Path | None]:
        from distill import plots

        return {"confusion": plots.confusion_matrices(entries, classes, out_dir / "confusion.png"),
                "reliability": plots.reliability_diagram(entries, out_dir / "reliability.png"),
                "per_class_f1": plots.per_class_f1(entries, classes, out_dir / "per_class_f1.png")}

    def artifact_cells(self, row: dict[str, Any]) -> list[str]:
        return [percent(row["acc"]), f"{row['acc_change_points']:+.2f}", percent(row["agreement_with_fp32"])]

    def summary_row(self, m: dict[str, Any]) -> list[str]:
        return [percent(m.get("test/acc")), percent(m.get("test/f1")), percent(m.get("best_val_acc"))]

    def summary_kept(self, student: dict[str, Any], teacher: dict[str, Any]) -> str:
        retained = 100 * float(student["test/acc"]) / max(float(teacher["test/acc"]), 1e-12)
        return f"accuracy retained: {retained:.1f}%"

    def shown(self, value: float) -> str:
        return f"{100 * value:.2f}%"

    def chance(self, labels: Tensor) -> tuple[float, str]:
        return (float(labels.bincount().max()) / len(labels) if len(labels) else 0.0), "always its most common class"

    def prediction_header(self, top_k: int) -> list[str]:
        return ["class", "probability", *[f"top{r}{s}" for r in range(1, top_k + 1) for s in ("", "_probability")]]

    def prediction_rows(self, outputs: Tensor, class_names: list[str], top_k: int) -> list[dict[str, Any]]:
        top = torch.softmax(outputs.float(), dim=1).topk(max(1, min(top_k, len(class_names))), dim=1)
        rows = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist()):
            row: dict[str, Any] = {"class": class_names[indices[0]], "probability": round(values[0], 6)}
            for rank, (value, index) in enumerate(zip(values, indices), start=1):
                row[f"top{rank}"], row[f"top{rank}_probability"] = class_names[index], round(value, 6)
            rows.append(row)
        return rows
