"""What a search leaves in its directory: every trial, the best configuration, a summary and plots."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

import yaml

from distill.run_dir import atomic_write, atomic_write_text
from distill.tasks import TASKS, Task, get_task

def task_of_study(study: Any) -> Task:
    """The task the study's trials train on, as the first finished trial recorded it (classification before any)."""
    figure = next((t.user_attrs["figure"] for t in study.get_trials(deepcopy=False) if "figure" in t.user_attrs), None)
    return next((get_task(name) for name in TASKS.names() if get_task(name).headline == figure), get_task(None))


def figure_of(study: Any) -> str:
    """The figure trials are scored by: the task's headline (``acc``; ``r2`` for a regression target)."""
    return task_of_study(study).headline


def columns(figure: str) -> list[str]:
    return ["number", "state", f"val_{figure}", f"test_{figure}", "epochs", "seconds", "params", "command"]


def rows(study: Any) -> list[dict[str, Any]]:
    """One plain row per trial, in trial order."""
    figure = figure_of(study)
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        out.append({"number": t.number, "state": t.state.name.lower(), f"val_{figure}": t.value,
                    f"test_{figure}": t.user_attrs.get(f"test_{figure}"), "epochs": t.user_attrs.get("epochs"),
                    "seconds": t.user_attrs.get("seconds"), "params": json.dumps(t.params, sort_keys=True),
                    "command": t.user_attrs.get("command", "")})
    return out


def _cell(value: Any, task: Task | None = None) -> str:
    if isinstance(value, float):
        if task is not None and task.plot_scale == 1:  # a figure shown as it is (R²)
            return f"{value:.4f}"
        return f"{100 * value:.2f}" if value <= 1.0 else f"{value:.1f}"
    return "" if value is None else str(value)


def write(out_dir: Path, study: Any, summary: dict[str, Any], best_config: dict[str, Any] | None) -> list[Path]:
    """Writes trials.csv, trials.md, summary.json, best.yaml (when a trial completed) and the plots; returns their paths."""
    table = rows(study)
    task = task_of_study(study)
    figure, name = task.headline, task.headline_label
    shown_as = "%" if task.plot_scale == 100 else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(figure))
    writer.writeheader()
    writer.writerows(table)
    written = [out_dir / "trials.csv", out_dir / "trials.md", out_dir / "summary.json"]
    atomic_write_text(written[0], buffer.getvalue())
    lines = [f"# Search {summary['study']}: {summary['stage']} stage, {summary['sampler']} sampler", "",
             f"Objective: best validation {name} of the run (test {name} recorded, never optimized).", "",
             f"| # | state | val {name} {shown_as} | test {name} {shown_as} | epochs | s | params |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in table:
        lines.append(f"| {r['number']} | {r['state']} | {_cell(r[f'val_{figure}'], task)} | "
                     f"{_cell(r[f'test_{figure}'], task)} | "
                     f"{_cell(r['epochs'])} | {_cell(r['seconds'])} | `{r['params']}` |")
    atomic_write_text(written[1], "\n".join(lines) + "\n")
    atomic_write_text(written[2], json.dumps(summary, indent=2, default=str) + "\n")
    if best_config is not None:
        written.append(out_dir / "best.yaml")
        atomic_write_text(written[-1], "# The best trial's full configuration: python -m distill.train "
                          f"{summary['stage']} --config {written[-1]}\n" + yaml.safe_dump(best_config, sort_keys=False))
    written += plots(study, out_dir)
    return written


def plots(study: Any, out_dir: Path) -> list[Path]:
    """Optimization history, parameter importances and slices (Optuna's matplotlib plots), where they apply."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    curves = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    made = []
    for name, draw, needs in (("history", vis.plot_optimization_history, 1), ("importances", vis.plot_param_importances, 2),
                              ("slices", vis.plot_slice, 1), ("intermediate", vis.plot_intermediate_values, 1)):
        if len(completed) < needs or (name == "intermediate" and not curves):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances of a single distinct value
            continue
        figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        path = out_dir / f"{name}.png"
        image = io.BytesIO()
        figure.savefig(image, format="png", dpi=90, bbox_inches="tight")
        atomic_write(path, lambda f: f.write(image.getvalue()))
        plt.close(figure)
        made.append(path)
    return made
