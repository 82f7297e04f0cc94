"""Teacher outputs computed once per training image and kept on disk.

Valid only when the student sees each image exactly as the teacher did, i.e. without random
augmentation: the cache is keyed by the teacher checkpoint's bytes and the training data's
fingerprint, so a changed teacher or changed data builds a new one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from distill.run_dir import atomic_write

CACHE_DIR = "teacher_logits"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(teacher_ckpt: str | Path, data_fingerprint: str) -> Path:
    """``<teacher dir>/teacher_logits/<key>.pt``, the key hashing the teacher file and the data."""
    key = hashlib.sha256(f"{file_digest(teacher_ckpt)}|{data_fingerprint}".encode()).hexdigest()[:24]
    return Path(teacher_ckpt).parent / CACHE_DIR / f"{key}.pt"


@torch.no_grad()
def compute_logits(teacher: nn.Module, batches, num_images: int, device: torch.device) -> Tensor:  # type: ignore[no-untyped-def]
    """Runs ``teacher`` (eval mode) over ``(inputs, indices)`` batches; returns (num_images, K) float32 logits."""
    table: Tensor | None = None
    for inputs, indices in batches:
        logits = teacher(inputs.to(device)).float().cpu()  # (B, K)
        if table is None:
            table = torch.zeros(num_images, logits.shape[1])
        table[indices] = logits
    assert table is not None, "no training images"
    return table


def save(table: Tensor, path: Path) -> None:
    """Atomic write: a temporary file in the same directory, fsync, rename."""
    atomic_write(path, lambda f: torch.save({"logits": table}, f))


def load(path: Path) -> Tensor | None:
    """The cached table, or None when missing or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["logits"]
    except Exception:  # noqa: BLE001  (truncated / corrupt cache: rebuild it)
        return None
