"""PNG figures for the comparison report (matplotlib, Agg backend: files only)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrices(entries: list[dict[str, Any]], classes: list[str], path: Path) -> Path:
    """Row-normalized confusion matrices, one panel per model, side by side."""
    plt = _pyplot()
    import numpy as np

    n = len(entries)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.6), squeeze=False)
    for ax, entry in zip(axes[0], entries):
        matrix = np.array(entry["confusion"], dtype=float)
        matrix = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{entry['name']} ({100 * entry['acc']:.2f}%)")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if len(classes) <= 20:
            ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            for i in range(len(classes)):
                for j in range(len(classes)):
                    if matrix[i, j] >= 0.01:
                        ax.text(j, i, f"{100 * matrix[i, j]:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if matrix[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predicted_vs_true(entries: list[dict[str, Any]], predictions: list[tuple[Any, Any]], path: Path) -> Path:
    """Regression: each model's predicted values against the true ones (the diagonal is perfect), one panel each."""
    plt = _pyplot()
    n = len(entries)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.4), squeeze=False)
    low = min(min(float(p.min()), float(t.min())) for p, t in predictions)
    high = max(max(float(p.max()), float(t.max())) for p, t in predictions)
    for ax, entry, (predicted, true) in zip(axes[0], entries, predictions):
        ax.plot([low, high], [low, high], "k--", linewidth=1)
        ax.scatter(true.numpy(), predicted.numpy(), s=8, alpha=0.6)
        ax.set_title(f"{entry['name']} (R² {entry['r2']:.3f}, MAE {entry['mae']:.3g})")
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_diagram(entries: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy against confidence per bin; the diagonal is perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    for entry in entries:
        rel = entry["reliability"]
        points = [(c, a) for c, a, n in zip(rel["confidence"], rel["accuracy"], rel["count"]) if n > 0]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", markersize=3,
                label=f"{entry['name']} (ECE {100 * entry['ece']:.2f}%)")
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Reliability diagram (test set)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_class_f1(entries: list[dict[str, Any]], classes: list[str], path: Path) -> Path:
    """Grouped bars of each class's F1, one bar per model."""
    plt = _pyplot()
    import numpy as np

    k = len(classes)
    width = 0.8 / len(entries)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * k), 4))
    for i, entry in enumerate(entries):
        ax.bar(np.arange(k) + i * width - 0.4 + width / 2, entry["per_class_f1"], width, label=entry["name"])
    ax.set_xticks(range(k), classes if k <= 20 else [str(i) for i in range(k)], rotation=60, fontsize=7)
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Per-class F1 (test set)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_epoch_curves(metrics_csv: Path, monitor: str = "val/acc") -> dict[str, list[tuple[int, float]]]:
    """Per-epoch series from a CSV logger file: mean logged training loss, validation loss and the
    monitored validation figure (``val_figure``: ``monitor``, the task's).

    Epochs are counted from 1 (the values at the end of the first epoch are at x = 1).
    """
    curves: dict[str, dict[int, float]] = {"train_loss": {}, "val_loss": {}, "val_figure": {}}
    train_sum: dict[int, float] = {}
    train_count: dict[int, int] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if not epoch:
                continue
            e = int(float(epoch)) + 1
            for key, column in (("val_figure", monitor), ("val_loss", "val/loss")):
                if row.get(column):
                    curves[key][e] = float(row[column])
            if row.get("train/loss"):
                train_sum[e] = train_sum.get(e, 0.0) + float(row["train/loss"])
                train_count[e] = train_count.get(e, 0) + 1
    curves["train_loss"] = {e: train_sum[e] / train_count[e] for e in train_sum}
    return {k: sorted(v.items()) for k, v in curves.items()}


def training_curves(runs: list[tuple[str, Path]], path: Path, monitor: str = "val/acc", label: str = "accuracy",
                    scale: float = 100.0, loss: str = "ce") -> Path | None:
    """Loss and the monitored validation figure (``monitor``, titled ``label``, plotted times ``scale``) per
    epoch of each run that has CSV logs; None when none has. ``loss`` names the validation loss."""
    series = [(name, read_epoch_curves(csv_path, monitor)) for name, csv_path in runs if csv_path.is_file()]
    if not series:
        return None
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curves in series:
        if curves["train_loss"]:
            loss_ax.plot(*zip(*curves["train_loss"]), "o-", markersize=3, label=f"{name} train")
        if curves["val_loss"]:
            loss_ax.plot(*zip(*curves["val_loss"]), "s--", markersize=3, label=f"{name} val ({loss})")
        if curves["val_figure"]:
            acc_ax.plot(*zip(*[(e, scale * a) for e, a in curves["val_figure"]]), "o-", label=name)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss (train: mean of logged steps, with KD terms)")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel(f"validation {label}{' %' if scale == 100 else ''}")
    loss_ax.legend(fontsize=8)
    acc_ax.legend(fontsize=8)
    fig.suptitle("Training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
