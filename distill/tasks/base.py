"""What a task is: how labels are learned, scored, reported and predicted. One subclass per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from torchmetrics import MetricCollection


class Task:
    """Everything that differs between kinds of target, asked of one object instead of branched on.

    A new task (say, multi-label) is one file: a subclass registered in ``distill.tasks.TASKS``.
    Networks, systems, reports and commands call these members and never test the task's name.

    Attributes:
        name: The registry key, saved in checkpoints as a plain value.
        headline: The figure the task is judged by, higher being better (``acc``, ``r2``).
        headline_label: How reports title it.
        loss_term: The name of the labels' loss term in the logs (``train/loss_<term>``).
        default_method: The distillation method used when none is named.
        output_kind: What the network outputs, as an exported file's description says (``logits``, ``values``).
        figures: The quality figures an artifact's row in ``distill.compress`` carries (of ``quality``).
        report_columns: Titles of the quality columns of ``distill.evaluate``'s table.
        artifact_columns: Titles of the quality columns of ``distill.compress``'s table; ``artifact_note`` explains them.
        summary_columns: Titles of the figures of the end-of-stage summary table.
    """

    name: str = ""
    headline: str = ""
    headline_label: str = ""
    loss_term: str = ""
    default_method: str = ""
    output_kind: str = ""
    figures: tuple[str, ...] = ()
    report_columns: tuple[str, ...] = ()
    artifact_columns: tuple[str, ...] = ()
    artifact_note: str = ""
    plot_scale: float = 1.0  # the headline figure as plotted: accuracy in %
    summary_columns: tuple[str, ...] = ()

    @property
    def monitor(self) -> str:
        """The validation figure that picks the best checkpoint (higher is better)."""
        return f"val/{self.headline}"

    # --- the labels -----------------------------------------------------------------------------------
    has_classes: bool = True  # whether targets are classes (class names, LDA, top-k)
    min_eval_rows: int = 1  # the fewest rows a validation or test split can be scored on

    def encode_targets(self, values: list[str], column: str, lines: list[int]) -> tuple[np.ndarray, tuple[str, ...]]:
        """A table's target cells -> (labels (N,), class names); ``lines``: each cell's line in the file."""
        raise NotImplementedError

    def target_tensor(self, labels: np.ndarray) -> Tensor:
        """Encoded labels as the batches carry them."""
        raise NotImplementedError

    def fit_targets(self, labels: np.ndarray) -> dict[str, float]:
        """Plain values fitted on the training labels, saved with the data's preprocessing."""
        return {}

    def target_scale(self, fitted: dict[str, Any]) -> tuple[float, float] | None:
        """The (mean, std) the network's outputs are scaled by, from ``fit_targets``' values; None: none."""
        return None

    def output_width(self, classes: tuple[str, ...]) -> int:
        """The network's outputs per sample."""
        return len(classes)

    # --- the network and its training ---------------------------------------------------------------
    def check_outputs(self, num_classes: int) -> None:
        """Refuses an output width the task cannot have (a UsageError)."""

    def wrap(self, network: nn.Module, target_scale: tuple[float, float] | list[float] | None) -> nn.Module:
        """The network as the task uses it (regression: outputs back in the target's units)."""
        return network

    def metrics(self, num_classes: int) -> MetricCollection:
        """The torchmetrics a stage logs (cloned per split)."""
        raise NotImplementedError

    missing_label: float = -1  # the label of a row that has none (a synthetic row): what ``labelled`` tells apart

    def labelled(self, labels: Tensor) -> Tensor:
        """(B,) True where a row has a label (synthetic rows, made for a teacher to label, have none)."""
        return labels != self.missing_label

    def teacher_labelled(self, labels: Tensor, teacher: Tensor) -> Tensor:
        """Labels (B,) with the teacher's own answer (its outputs (B, K)) where a row has none."""
        raise NotImplementedError

    def learned(self, values: Tensor, network: nn.Module) -> Tensor:
        """Outputs or labels -> the units the network learns in (what losses and methods see)."""
        return values

    def supervised_loss(self, outputs: Tensor, labels: Tensor, network: nn.Module, label_smoothing: float) -> Tensor:
        """The labels' training loss."""
        raise NotImplementedError

    def eval_loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """The validation/test loss, in the units reported."""
        raise NotImplementedError

    def scored(self, outputs: Tensor) -> Tensor:
        """Outputs (B, K) -> what the metrics take."""
        return outputs

    def predicted(self, outputs: Tensor) -> Tensor:
        """Outputs (B, K) -> one prediction per sample (B,), as the epoch's training metrics take it."""
        raise NotImplementedError

    # --- reports ------------------------------------------------------------------------------------
    def test_figures(self, outputs: Tensor, labels: Tensor) -> dict[str, float]:
        """The ``test/...`` figures of ``metrics.json``, over the whole test set."""
        raise NotImplementedError

    def quality(self, outputs: Tensor, labels: Tensor) -> dict[str, Any]:
        """Every quality figure of the comparison report."""
        raise NotImplementedError

    def closeness(self, outputs: Tensor, reference: Tensor) -> tuple[str, float]:
        """How close outputs are to a reference's (a teacher's, an artifact's source): (key prefix, value)."""
        raise NotImplementedError

    def kept(self, entry: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
        """The quality ratio of a report entry against the reference's."""
        raise NotImplementedError

    def kept_text(self, ratios: dict[str, Any]) -> tuple[str, str]:
        """(column title, value) of ``kept``'s ratio in a report."""
        raise NotImplementedError

    def report_row(self, entry: dict[str, Any]) -> list[str]:
        """One model's quality cells, under ``report_columns``."""
        raise NotImplementedError

    def report_note(self) -> str:
        """The footnote that explains the report's quality figures."""
        return ""

    def plots(self, entries: list[dict[str, Any]], outputs: list[tuple[Tensor, Tensor]], classes: list[str],
              out_dir: Path) -> dict[str, Path | None]:
        """The task's figures of a comparison report, by name."""
        return {}

    def artifact_cells(self, row: dict[str, Any]) -> list[str]:
        """An artifact's quality cells in ``distill.compress``'s table, under ``artifact_columns``."""
        raise NotImplementedError

    def summary_row(self, metrics: dict[str, Any]) -> list[str]:
        """A finished stage's figures under ``summary_columns``."""
        raise NotImplementedError

    def summary_kept(self, student: dict[str, Any], teacher: dict[str, Any]) -> str:
        """What a student kept of its teacher, in words."""
        raise NotImplementedError

    def shown(self, value: float) -> str:
        """The headline figure as reports print it."""
        raise NotImplementedError

    def chance(self, labels: Tensor) -> tuple[float, str]:
        """The headline figure of the best answer that ignores the inputs, on these test labels, and what
        that answer is (a teacher hardly above it is read otherwise than it was trained)."""
        raise NotImplementedError

    def samples(self, input_rank: int) -> str:
        """What a test sample is called."""
        return "rows" if input_rank == 1 else "images"

    # --- predictions --------------------------------------------------------------------------------
    def prediction_header(self, top_k: int) -> list[str]:
        """Columns ``distill.predict`` writes after the input's name."""
        raise NotImplementedError

    def prediction_rows(self, outputs: Tensor, class_names: list[str], top_k: int) -> list[dict[str, Any]]:
        """One dict per sample: printable fields for ``distill.predict``'s table and CSV."""
        raise NotImplementedError


def number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}"
