"""The run directory: what a finished stage leaves behind, written atomically, never clobbered by accident."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from distill.errors import UsageError

BEST, LAST, METRICS, CONFIG = "best.ckpt", "last.ckpt", "metrics.json", "config.yaml"
# A tree teacher's own file (named by its library, so it is never taken for an ONNX file's description)
# and its deployable ONNX file with that description beside it.
NATIVE = {"lightgbm": "lightgbm.txt", "xgboost": "xgboost.json"}
ONNX_FILE, ONNX_DESCRIPTION = "model.onnx", "model.json"
OUTPUTS = (BEST, LAST, METRICS, CONFIG, *NATIVE.values(), ONNX_FILE, ONNX_DESCRIPTION)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write(file)`` on a temporary file in ``path``'s directory, fsyncs it and renames it over
    ``path``, so a crash leaves either the old file or the new one, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write`` of bytes."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write`` of a UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """Writes the flat ``metrics.json`` of a finished stage."""
    path = run_dir / METRICS
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` of a finished stage, or None if there is none."""
    path = run_dir / METRICS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: Path, flag: str) -> None:
    """Refuses, before any work, a directory a command is to write into that is a file or cannot be written.

    Raises:
        UsageError: naming ``flag`` and what is in the way.
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a directory")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {ancestor} is not writable")


def check_output_file(path: Path, flag: str) -> None:
    """Refuses, before any work, a file a command is to write that is a directory or cannot be written.

    Raises:
        UsageError: naming ``flag`` and what is in the way.
    """
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; give the file to write")
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {ancestor} is not writable")


@contextmanager
def replacing(run_dir: Path, overwrite: bool, resume: bool, resumable: bool = True) -> Iterator[bool]:
    """Around a stage: refuses to start over a previous run unless asked; with ``overwrite`` moves its
    outputs aside, puts them back if this run does not finish (an error, Ctrl-C) and removes them once
    it has. ``resumable``: whether the stage can be resumed (a tree ensemble, fitted in one pass, cannot).
    Yields whether an earlier run is being replaced.

    A run killed outright leaves the earlier outputs in ``run_dir/.previous-*``.

    Raises:
        UsageError: ``run_dir`` holds checkpoints or metrics and neither overwrite nor resume was asked.
    """
    existing = [name for name in (BEST, LAST, METRICS) if (run_dir / name).exists()]
    if not existing or resume:
        yield False
        return
    if not overwrite:
        state = "a finished run" if METRICS in existing else "an unfinished run"
        resuming = ", --ckpt_path last to resume it," if resumable else ""
        raise UsageError(f"{run_dir} already holds {state} ({', '.join(existing)}); pass --overwrite true to "
                         f"replace it{resuming} or --run_dir DIR for a new one")
    aside = Path(tempfile.mkdtemp(prefix=".previous-", dir=run_dir))
    for name in OUTPUTS:
        if (run_dir / name).exists():
            os.replace(run_dir / name, aside / name)
    try:
        yield True
    except BaseException:
        for name in OUTPUTS:  # this run's partial outputs give way to the finished run they were to replace
            (run_dir / name).unlink(missing_ok=True)
        for kept in aside.iterdir():
            os.replace(kept, run_dir / kept.name)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)
