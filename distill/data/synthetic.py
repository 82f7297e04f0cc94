"""Synthetic table rows for a teacher to label: more inputs on which a student can match it.

A small network distilled from a strong teacher on a few thousand rows sees the teacher only where
the data has rows. Rows made near the real ones let it match the teacher on more of the input space
(Bucilă, Caruana & Niculescu-Mizil 2006, "Model Compression", KDD: their MUNGE). The rows are made
from the training rows alone, in the model-ready encoding, carry no label (the teacher's stands in)
and never enter validation or test.

Both makers work on encoded rows (N, F) whose ``nominal`` column blocks (one-hot groups, ordinal
codes, missing-value indicators) are moved whole, so every synthetic row is a row the preprocessing
could have written; the other columns are numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from distill.errors import UsageError

Blocks = Sequence[tuple[int, int]]  # (first column, width) of each nominal block


def _numeric_mask(width: int, nominal: Blocks) -> Tensor:
    mask = torch.ones(width, dtype=torch.bool)
    for start, size in nominal:
        mask[start:start + size] = False
    return mask  # (F,) True where a column is a number


def nearest_neighbours(rows: Tensor, chunk: int = 2048) -> Tensor:
    """For every row (N, F), the index (N,) of its nearest other row (Euclidean distance on the encoded row: on
    a one-hot block, the square root of two per differing category, as Hamming distance counts it)."""
    if len(rows) < 2:
        raise UsageError(f"synthetic rows need at least 2 training rows to pair, got {len(rows)}")
    found = torch.empty(len(rows), dtype=torch.long)
    for start in range(0, len(rows), chunk):
        distances = torch.cdist(rows[start:start + chunk], rows)  # (C, N)
        own = torch.arange(start, min(start + chunk, len(rows)))
        distances[own - start, own] = float("inf")  # not itself
        found[start:start + chunk] = distances.argmin(dim=1)
    return found


def munge(rows: Tensor, nominal: Blocks, factor: int, swap: float = 0.5, spread: float = 1.0,
          seed: int = 0) -> Tensor:
    """MUNGE (Bucilă et al. 2006): ``factor`` passes over the rows; in each, every row e and its nearest
    neighbour e' make one new row: each attribute, with probability ``swap``, is taken from e' (a nominal
    block) or drawn from N(e'_a, |e_a - e'_a| / ``spread``) (a number); otherwise it is e's.

    The paper changes e and e' together; here every row takes its turn as e in each pass, which moves
    every row toward its neighbour with the same distribution and makes ``factor`` times as many rows.

    Args:
        rows: (N, F) encoded training rows.
        nominal: Column blocks moved whole.
        factor: New rows per training row.
        swap: Probability p of changing an attribute, in (0, 1].
        spread: The paper's s > 0: a larger value keeps numbers closer to the neighbour's.
        seed: Seed of the draws (the same rows every time for the same settings).

    Returns:
        (factor * N, F) synthetic rows.
    """
    if not 0 < swap <= 1 or not spread > 0:
        raise UsageError(f"munge needs swap probability in (0, 1] and spread > 0, got {swap} and {spread}")
    generator = torch.Generator().manual_seed(seed)
    rows = rows.float()
    partner = rows[nearest_neighbours(rows)]  # (N, F)
    numeric = _numeric_mask(rows.shape[1], nominal)
    made = []
    for _ in range(factor):
        out = rows.clone()
        chosen = torch.rand(rows.shape, generator=generator) < swap  # (N, F) attributes to change
        noise = torch.randn(rows.shape, generator=generator)
        drawn = partner + noise * (rows - partner).abs() / spread  # (N, F) numbers near the neighbour's
        out[:, numeric] = torch.where(chosen[:, numeric], drawn[:, numeric], rows[:, numeric])
        for start, size in nominal:  # one draw decides a whole block
            take = chosen[:, start]
            out[take, start:start + size] = partner[take, start:start + size]
        made.append(out)
    return torch.cat(made)


def gaussian(rows: Tensor, nominal: Blocks, factor: int, noise: float = 0.1, seed: int = 0) -> Tensor:
    """Every training row ``factor`` times, its numbers moved by Gaussian noise of ``noise`` times each column's
    standard deviation over the training rows; nominal blocks kept.

    Returns:
        (factor * N, F) synthetic rows.
    """
    if not noise > 0:
        raise UsageError(f"gaussian rows need noise > 0, got {noise}")
    generator = torch.Generator().manual_seed(seed)
    rows = rows.float()
    numeric = _numeric_mask(rows.shape[1], nominal)
    scale = torch.where(numeric, rows.std(dim=0) * noise, torch.zeros(()))  # (F,) 0 on nominal columns
    return torch.cat([rows + torch.randn(rows.shape, generator=generator) * scale for _ in range(factor)])


MAKERS = ("munge", "gaussian")
