"""Checkpoint writes that a crash cannot truncate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from distill.run_dir import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file in the target directory, fsync, then rename.

    A process killed mid-save (SIGKILL included) leaves the previous ``best.ckpt``/``last.ckpt``
    intact, or the new one complete, never a truncated file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))
