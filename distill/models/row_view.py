"""A table network reading rows preprocessed for another: the other's encoding undone, its own applied.

Every step of ``distill.data.preprocess`` but imputation and reduction can be undone from the encoded
row alone: a scaled number is scaled back, a one-hot block or an ordinal code gives its category. So
a teacher fitted with other settings (z-scores against min-max, one-hot against ordinal, other
categories, a PCA of its own) still reads every row exactly as its own preprocessing would have
written it, provided that

* the student's rows are not reduced (a PCA or LDA projection loses what the teacher may need),
* every column the teacher reads is one the student's rows carry, and
* a column with gaps in the data was filled with the same value on both sides, or the student
  keeps a missing-indicator for it (a filled cell is otherwise indistinguishable from a real one).

``row_view`` says which of these fails, in one line, when one does.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.data.preprocess import encoded_layout
from distill.errors import UsageError


# How far a number turned back from a float32 row may lie from the value it was written from, relative to its
# distance from the scaling's centre: float32 keeps 24 bits (2**-24), with room for the two float64 steps.
ROUNDING = 2.0 ** -22


def _scaling(fitted: dict[str, Any], width: int) -> tuple[list[float], list[float]]:
    """Per numeric column (shift, divisor) with ``encoded = (value - shift) / divisor``."""
    if fitted["scaling"] == "none" or not width:
        return [0.0] * width, [1.0] * width
    divisor = [s if s != 0 else 1.0 for s in fitted["scale"]]  # min-max of a constant column divides by 1
    return list(fitted["shift"]), divisor


class RowView(nn.Module):
    """Student rows (B, Fs) -> the network's outputs on the same rows preprocessed by its own fit.

    Args:
        network: The network (or an ONNX file's session, called alike), trained on rows preprocessed by ``own``.
        own: Its fitted preprocessing (``fit_preprocessing``'s plain values).
        own_schema: Its feature columns: ``{"numeric": [...], "categorical": [...]}``.
        given: The fitted preprocessing of the rows it is given.
        given_schema: Their feature columns.
        gaps: Columns with a missing cell somewhere in the data the rows come from.
        known_values: Per numeric column of the given rows, the sorted distinct values (raw units,
            float64) the table holds; a number turned back within float32 rounding of one of them is
            that value exactly. The rows are float32, so undoing their scaling lands a rounding away
            from the value read from the file: a tree's split at 0 or at a filled gap's value would
            otherwise send the row the other way.

    Raises:
        UsageError: the rows cannot be turned into the network's own (the module docstring's conditions).
    """

    def __init__(self, network: nn.Module, own: dict[str, Any], own_schema: dict[str, list[str]],
                 given: dict[str, Any], given_schema: dict[str, list[str]], gaps: Collection[str],
                 known_values: Sequence[Tensor] | None = None) -> None:
        super().__init__()
        self.network = network
        if given["reduction"] != "none":
            raise UsageError(f"the rows here are reduced ({given['reduction']}), which cannot be undone")
        numeric, categorical = list(given_schema["numeric"]), list(given_schema["categorical"])
        own_numeric, own_categorical = list(own_schema["numeric"]), list(own_schema["categorical"])
        absent = [c for c in [*own_numeric, *own_categorical] if c not in numeric + categorical] + \
            [c for c in own_numeric if c in categorical] + [c for c in own_categorical if c in numeric]
        if absent:
            raise UsageError(f"it reads column {absent[0]!r}, which the rows here do not carry as it did")
        given_layout = encoded_layout(given, numeric, categorical)
        own_layout = encoded_layout(own, own_numeric, own_categorical)
        self.numeric_index = [numeric.index(c) for c in own_numeric]
        # per own numeric column: the values it can be snapped to (its gap fill among them), or none
        fills = [float(f) for f in given.get("numeric_fill") or [float("nan")] * len(numeric)]
        self.known = [None if known_values is None else
                      torch.unique(torch.cat([known_values[j].to(torch.float64),
                                              torch.tensor([fills[j]] if math.isfinite(fills[j]) else [],
                                                           dtype=torch.float64)]))
                      for j in self.numeric_index]
        shift, divisor = _scaling(given, len(numeric))
        own_shift, own_divisor = _scaling(own, len(own_numeric))
        gap_fill: list[tuple[int, int, float]] = []  # (own column, student's indicator, own fill)
        for k, column in enumerate(own_numeric):
            j = numeric.index(column)
            if column in gaps and own["numeric_fill"][k] != given["numeric_fill"][j]:
                if column not in given_layout["indicators"]:
                    raise UsageError(f"column {column!r} has gaps filled with {given['numeric_fill'][j]:g} here and "
                                     f"{own['numeric_fill'][k]:g} by its fit; --data.missing_indicator true tells them apart")
                gap_fill.append((k, given_layout["indicators"][column], float(own["numeric_fill"][k])))
        indicators = []  # own indicator -> the student's indicator column, or -1 (a column without gaps)
        for column in own_layout["indicators"]:
            if column in given_layout["indicators"]:
                indicators.append(given_layout["indicators"][column])
            elif column in gaps:
                raise UsageError(f"it marks the gaps of column {column!r}, which the rows here do not "
                                 "(--data.missing_indicator true)")
            else:
                indicators.append(-1)
        self.gap_fill, self.indicators = gap_fill, indicators
        self.blocks, self.category_maps = [], []
        for k, column in enumerate(own_categorical):
            c = categorical.index(column)
            ours, theirs = given["categories"][c], own["categories"][k]
            if column in gaps and given["categorical_fill"][c] != own["categorical_fill"][k]:
                raise UsageError(f"column {column!r} has gaps filled with {given['categorical_fill'][c]!r} here and "
                                 f"{own['categorical_fill'][k]!r} by its fit")
            # the student's code i (its last: unseen) -> the network's code (-1: unseen by it)
            mapping = [theirs.index(v) if v in theirs else -1 for v in ours] + [-1]
            self.blocks.append(given_layout["blocks"][c])
            self.category_maps.append((torch.tensor(mapping), len(theirs)))
        self.given_encoding, self.own_encoding = given["encoding"], own["encoding"]
        f64 = torch.float64
        self.register_buffer("shift", torch.tensor(shift, dtype=f64), persistent=False)
        self.register_buffer("divisor", torch.tensor(divisor, dtype=f64), persistent=False)
        self.register_buffer("own_shift", torch.tensor(own_shift, dtype=f64), persistent=False)
        self.register_buffer("own_divisor", torch.tensor(own_divisor, dtype=f64), persistent=False)
        reduced = own["reduction"] != "none"
        self.register_buffer("reduction_mean", torch.tensor(own["reduction_mean"], dtype=f64) if reduced else None,
                             persistent=False)
        self.register_buffer("reduction_matrix", torch.tensor(own["reduction_matrix"], dtype=f64) if reduced
                             else None, persistent=False)
        self.summary = (f"rows re-encoded: scaling {given['scaling']}->{own['scaling']}, encoding "
                        f"{given['encoding']}->{own['encoding']}, reduction none->{own['reduction']}"
                        f"{', numbers exact to the table' if known_values is not None else ''}")

    def describe(self) -> str:
        """What it changes, for cache keys and reports (the fitted values are in the data's fingerprint)."""
        return self.summary

    def own_rows(self, rows: Tensor) -> Tensor:
        """(B, Fs) rows preprocessed for the student -> (B, Ft) the same rows as the network's fit writes them."""
        x = rows.to(torch.float64)
        values = self._exact((x[:, :len(self.shift)] * self.divisor + self.shift)[:, self.numeric_index])  # (B, n) raw
        for k, indicator, fill in self.gap_fill:
            values[:, k] = torch.where(x[:, indicator] > 0.5, torch.full_like(values[:, k], fill), values[:, k])
        parts = [(values - self.own_shift) / self.own_divisor]
        if self.indicators:
            zeros = torch.zeros(len(x), 1, dtype=x.dtype, device=x.device)
            parts.append(torch.cat([x[:, i:i + 1] if i >= 0 else zeros for i in self.indicators], dim=1))
        for (start, width), (mapping, own_count) in zip(self.blocks, self.category_maps):
            block = x[:, start:start + width]
            if self.given_encoding == "onehot":  # all zeros: a category unseen in training
                codes = torch.where(block.sum(dim=1) > 0.5, block.argmax(dim=1), torch.full_like(block[:, 0], width).long())
            else:
                codes = block[:, 0].round().long().clamp(0, len(mapping) - 1)
            own = mapping.to(x.device)[codes]  # (B,) the network's codes, -1 unseen
            if self.own_encoding == "onehot":
                parts.append(F.one_hot(own.clamp(min=0), own_count).to(x.dtype) * (own >= 0).unsqueeze(1))
            else:
                parts.append(torch.where(own >= 0, own, own_count).to(x.dtype).unsqueeze(1))
        features = torch.cat(parts, dim=1)
        if self.reduction_matrix is not None:
            features = (features - self.reduction_mean) @ self.reduction_matrix
        return features.to(rows.dtype)

    def _exact(self, values: Tensor) -> Tensor:
        """(B, n) numbers turned back from float32 rows -> each the table's own value where one lies within
        that rounding (a value made up between rows, a synthetic one, stays as it is)."""
        shift = self.shift[self.numeric_index]  # (n,) the given scaling's centre: rounding grows with the distance
        for k, known in enumerate(self.known):
            if known is None or not len(known):
                continue
            known = known.to(values.device)
            v = values[:, k].contiguous()
            padded = torch.cat([known[:1], known, known[-1:]])
            i = torch.searchsorted(known, v)  # known[i - 1] <= v <= known[i], as padded[i], padded[i + 1]
            below, above = padded[i], padded[i + 1]
            nearest = torch.where((v - below).abs() <= (above - v).abs(), below, above)
            rounding = ROUNDING * ((v - shift[k]).abs() + 1e-12 * v.abs())
            values[:, k] = torch.where((nearest - v).abs() <= rounding, nearest, v)
        return values

    def forward(self, rows: Tensor) -> Tensor:
        return self.network(self.own_rows(rows))


def row_view(network: nn.Module, data_hparams: dict[str, Any] | None, data: Any) -> nn.Module:
    """``network`` (a module, or an ONNX file's session) reading ``data``'s rows as its own fit preprocessed
    them: itself when both fits are one or the data is no table, a ``RowView`` when they differ.

    Raises:
        UsageError: the fits differ in a way the rows cannot be turned back from, named.
    """
    own, given = (data_hparams or {}).get("fitted"), getattr(data, "fitted", None)
    if own is None or given is None:
        return network
    schema = (data_hparams or {}).get("schema")
    given_schema = {"numeric": list(data.numeric_columns), "categorical": list(data.categorical_columns)}
    if own == given and (schema is None or all(list(schema[k]) == given_schema[k] for k in given_schema)):
        return network
    if schema is None:
        raise UsageError("its checkpoint does not record its columns (made before they were recorded)")
    classes = list(getattr(data, "classes", ()) or ())
    if schema.get("classes") and classes and list(schema["classes"]) != classes:
        raise UsageError(f"it was trained on classes {list(schema['classes'])}, the rows here have {classes}")
    device = next(network.parameters(), torch.empty(0)).device if isinstance(network, nn.Module) else "cpu"
    return RowView(network, own, schema, given, given_schema, getattr(data, "gaps", ()),
                   getattr(data, "numeric_values", None)).to(device).eval()
