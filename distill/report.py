"""Terminal summaries of finished stages (rich tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from distill.tasks import get_task

from distill.run_dir import read_metrics


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
    task = get_task(metrics.get("task"))
    for column in ("run", "model", "params", *task.summary_columns, "epochs", "time s"):
        table.add_column(column, justify="left" if column in ("run", "model") else "right")
    for name, m in rows:
        table.add_row(name, str(m.get("model", "?")), f"{m.get('params', 0):,}", *task.summary_row(m), str(m.get("epochs", "-")),
                      str(m.get("train_seconds", "-")))
    console.print(table)
    if len(rows) == 2:
        teacher, student = rows[0][1], rows[1][1]
        ratio = student["params"] / max(teacher["params"], 1)
        share = f"1/{1 / ratio:.1f}" if ratio < 1 else f"{ratio:.1f}x"
        kept = task.summary_kept(student, teacher)
        console.print(f"student/teacher parameters: {ratio:.3f} ({share}); {kept} ({_method(metrics)})")


def _method(metrics: dict) -> str:
    """How the student was distilled, e.g. ``kd temperature=2.0, alpha=0.9, logit_standardize=False``."""
    settings = metrics.get("method_settings") or {}
    return f"{metrics.get('method', '?')} {', '.join(f'{k}={v}' for k, v in settings.items())}".strip()
