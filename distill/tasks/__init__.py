"""Tasks: what a target is and how it is learned, scored, reported and predicted. One file each.

Add a task: write ``distill/tasks/<name>.py`` (a ``Task`` subclass) and register it here.
"""

from __future__ import annotations

from distill.registry import Registry
from distill.tasks.base import Task
from distill.tasks.classification import Classification
from distill.tasks.regression import Regression

TASKS: Registry[type[Task]] = Registry("task")
TASKS.register(Classification, name="classification")
TASKS.register(Regression, name="regression")


def get_task(name: str | None) -> Task:
    """The task registered as ``name`` (None, as in checkpoints older than tasks: classification)."""
    return TASKS.get(name or "classification")()


__all__ = ["TASKS", "Classification", "Regression", "Task", "get_task"]
