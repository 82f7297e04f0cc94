"""The random number generators' states as plain values, for checkpoints that resume bit for bit."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CPU and every CUDA device).

    Only tensors, ints, floats and strings: a checkpoint holding them still loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restores what ``rng_states`` returned (CUDA states only where this machine has the devices)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def replay_loader_seed_draw(loader: Any) -> None:
    """Draws from the global generator what creating an iterator over ``loader`` draws.

    An uninterrupted run creates each epoch's training iterator after the epoch starts, and a
    ``DataLoader`` without a generator of its own takes its workers' base seed from the global
    generator when it does (one int64). A resumed run created its iterator while restoring, before
    its generators were set back, so the draw is replayed once they are. Loaders that keep their
    workers (``persistent_workers``) create no new iterator and draw nothing. Guarded by the
    kill-and-resume test, which compares final weights bit for bit.
    """
    if not isinstance(loader, torch.utils.data.DataLoader) or loader.generator is not None:
        return
    if loader.persistent_workers and loader.num_workers > 0:
        return
    torch.empty((), dtype=torch.int64).random_()
