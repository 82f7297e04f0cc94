"""Whether a model was trained on the same split of the data as this run: its training rows must not be this run's
validation or test rows."""

from __future__ import annotations

from typing import Any

SPLIT = ("dataset", "path", "file_sha256", "target", "split_seed", "val_fraction", "test_fraction")
SAME_TABLE_SPLIT = ("target", "split_seed", "val_fraction", "test_fraction")  # of one file (same sha256), moved or not


def split_difference(recorded: dict[str, Any], data: Any, keys: tuple[str, ...] = SPLIT) -> tuple[str, Any, Any] | None:
    """The first split setting (name, recorded value, this data's value) that differs, or None."""
    here = dict(getattr(data, "hparams", {}) or {})
    return next(((key, recorded[key], here[key]) for key in keys
                 if key in recorded and key in here and recorded[key] != here[key]), None)


def same_table(recorded: dict[str, Any], data: Any) -> bool:
    """Whether the recorded data settings name the very file this data reads (by its sha256)."""
    here = dict(getattr(data, "hparams", {}) or {})
    return recorded.get("file_sha256") is not None and recorded.get("file_sha256") == here.get("file_sha256")
