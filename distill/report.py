"""Terminal summaries of finished stages (rich tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from distill.run_dir import read_metrics


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}"


def print_summary(stage: str, run_dir: Path, metrics: dict[str, Any], console: Console | None = None) -> None:
    """Prints the test metrics of a finished stage; a student's next to its teacher's."""
    console = console or Console()
    rows: list[tuple[str, dict[str, Any]]] = []
    if metrics.get("teacher_ckpt"):  # a distillation run: its teacher's row beside it
        teacher = read_metrics(Path(metrics["teacher_ckpt"]).parent)
        if teacher is not None:
            rows.append(("teacher", teacher))
    rows.append((stage, metrics))
    table = Table(title=f"Test set, best checkpoint ({run_dir})")
    regression = metrics.get("task") == "regression"
    columns = ("MSE", "MAE", "R²", "val R²") if regression else ("acc %", "F1 %", "val acc %")
    for column in ("run", "model", "params", *columns, "epochs", "time s"):
        table.add_column(column, justify="left" if column in ("run", "model") else "right")
    for name, m in rows:
        if regression:
            figures = [_num(m.get("test/mse")), _num(m.get("test/mae")), _num(m.get("test/r2"), 3),
                       _num(m.get("best_val_r2"), 3)]
        else:
            figures = [_pct(m.get("test/acc")), _pct(m.get("test/f1")), _pct(m.get("best_val_acc"))]
        table.add_row(name, str(m.get("model", "?")), f"{m.get('params', 0):,}", *figures, str(m.get("epochs", "-")),
                      str(m.get("train_seconds", "-")))
    console.print(table)
    if len(rows) == 2:
        teacher, student = rows[0][1], rows[1][1]
        ratio = student["params"] / max(teacher["params"], 1)
        share = f"1/{1 / ratio:.1f}" if ratio < 1 else f"{ratio:.1f}x"
        if regression:
            kept = f"test R² {float(student['test/r2']):.3f} against the teacher's {float(teacher['test/r2']):.3f}"
        else:
            kept = f"accuracy retained: {100 * float(student['test/acc']) / max(float(teacher['test/acc']), 1e-12):.1f}%"
        console.print(f"student/teacher parameters: {ratio:.3f} ({share}); {kept} ({_method(metrics)})")


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _method(metrics: dict) -> str:
    """How the student was distilled, e.g. ``kd temperature=2.0, alpha=0.9, logit_standardize=False``."""
    settings = metrics.get("method_settings") or {}
    return f"{metrics.get('method', '?')} {', '.join(f'{k}={v}' for k, v in settings.items())}".strip()
