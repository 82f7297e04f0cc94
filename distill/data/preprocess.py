"""The classic preprocessing of table rows, fitted by scikit-learn on the training rows, applied from plain values.

Numeric columns: missing values imputed (mean, median or the most frequent value; optionally a 0/1 missing-indicator column
per column that had gaps in training), then scaled (z-score or min-max). Categorical columns:
missing values imputed with the most frequent category, then one-hot or ordinal encoded. Then,
optionally, PCA (a number of components, or the fraction of variance to keep) or LDA (classification).

``fit_preprocessing`` fits scikit-learn's own transformers and keeps what they learned as plain
lists (means, scales, categories, components): that state is saved with every checkpoint and
``apply_preprocessing`` applies it with numpy alone, so loading stays ``weights_only=True`` and
evaluation, prediction and export compute exactly the training transform. Unseen categories at
prediction time encode as all zeros (one-hot) or as one extra code (ordinal).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from distill.errors import UsageError

IMPUTES = ("mean", "median", "most_frequent")
ENCODINGS = ("onehot", "ordinal")
SCALINGS = ("zscore", "minmax", "none")
REDUCTIONS = ("none", "pca", "lda")


def _require_sklearn() -> None:
    """A one-line error naming the extra when scikit-learn is missing (it fits the steps, never applies them)."""
    if importlib.util.find_spec("sklearn") is None:
        raise UsageError('tabular data needs scikit-learn to fit its preprocessing: pip install -e ".[tabular]"')


def fit_preprocessing(numeric: np.ndarray, categorical: np.ndarray, labels: np.ndarray | None, *,
                      impute: str = "mean", missing_indicator: bool = False, encoding: str = "onehot",
                      scaling: str = "zscore", reduction: str = "none", n_components: float | None = None,
                      numeric_names: list[str] | None = None, categorical_names: list[str] | None = None) -> dict[str, Any]:
    """Fits every step on the training rows only.

    Args:
        numeric: (N, n) floats, NaN where missing.
        categorical: (N, m) strings (object array), None where missing.
        labels: (N,) class indices, for LDA.
        impute, missing_indicator, encoding, scaling, reduction, n_components: The steps (module docstring).
        numeric_names, categorical_names: Column names, for error messages.

    Returns:
        The fitted state: plain values and lists only.

    Raises:
        UsageError: an unknown step, a column with no value at all, more components than features.
    """
    _require_sklearn()
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

    for value, valid, what in ((impute, IMPUTES, "impute"), (encoding, ENCODINGS, "encoding"),
                               (scaling, SCALINGS, "scaling"), (reduction, REDUCTIONS, "reduction")):
        if value not in valid:
            raise UsageError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    numeric_names = numeric_names or [f"numeric {i}" for i in range(numeric.shape[1])]
    categorical_names = categorical_names or [f"categorical {i}" for i in range(categorical.shape[1])]
    for j, name in enumerate(numeric_names):
        if np.isnan(numeric[:, j]).all():
            raise UsageError(f"column {name} has no value in the training rows")
    for j, name in enumerate(categorical_names):
        if all(v is None for v in categorical[:, j]):
            raise UsageError(f"column {name} has no value in the training rows")
    state: dict[str, Any] = {"impute": impute, "encoding": encoding, "scaling": scaling, "reduction": reduction}
    if numeric.shape[1]:
        imputer = SimpleImputer(strategy=impute).fit(numeric)
        state["numeric_fill"] = imputer.statistics_.tolist()
        filled = imputer.transform(numeric)
        state["indicator_columns"] = []
        if missing_indicator:
            state["indicator_columns"] = MissingIndicator(features="missing-only").fit(numeric).features_.tolist()
        if scaling == "zscore":
            scaler = StandardScaler().fit(filled)
            state["shift"], state["scale"] = scaler.mean_.tolist(), scaler.scale_.tolist()
        elif scaling == "minmax":
            scaler = MinMaxScaler().fit(filled)  # x * scale_ + min_ = (x - data_min) / data_range
            state["shift"], state["scale"] = scaler.data_min_.tolist(), scaler.data_range_.tolist()
    if categorical.shape[1]:
        texts = np.where(categorical == None, np.nan, categorical).astype(object)  # noqa: E711 (elementwise)
        imputer = SimpleImputer(strategy="most_frequent", missing_values=np.nan).fit(texts)
        state["categorical_fill"] = [str(v) for v in imputer.statistics_]
        filled = imputer.transform(texts).astype(str)
        encoder = (OneHotEncoder(handle_unknown="ignore") if encoding == "onehot" else OrdinalEncoder()).fit(filled)
        state["categories"] = [[str(c) for c in cats] for cats in encoder.categories_]
    features = _encode(numeric, categorical, state)
    if reduction == "pca":
        from sklearn.decomposition import PCA

        k: float | int = n_components if n_components is not None else 0.95
        if not 0 < k < 1:  # a fraction of the variance to keep, else a number of components
            if float(k) != int(k):
                raise UsageError(f"n_components: a fraction of variance in (0, 1) or a whole number of components, got {k}")
            k = int(k)
        if isinstance(k, int) and not 1 <= k <= min(features.shape):
            raise UsageError(f"PCA with {k} components: the data has {features.shape[1]} features "
                             f"and {features.shape[0]} training rows")
        pca = PCA(n_components=k, svd_solver="full").fit(features)
        state["reduction_mean"], state["reduction_matrix"] = pca.mean_.tolist(), pca.components_.T.tolist()
    elif reduction == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        if labels is None:
            raise UsageError("LDA needs class labels: use it for classification")
        classes = len(np.unique(labels))
        limit = min(features.shape[1], classes - 1)
        k = limit if n_components is None else int(n_components)
        if not 1 <= k <= limit:
            raise UsageError(f"LDA with {k} components: at most min(features, classes - 1) = {limit}")
        lda = LinearDiscriminantAnalysis(n_components=k, solver="svd").fit(features, labels)
        state["reduction_mean"], state["reduction_matrix"] = lda.xbar_.tolist(), lda.scalings_[:, :k].tolist()
    return state


def _encode(numeric: np.ndarray, categorical: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    """Imputation, indicators, scaling and encoding from the fitted state: (N, F) float64."""
    parts = []
    if numeric.shape[1]:
        missing = np.isnan(numeric)
        filled = np.where(missing, np.asarray(state["numeric_fill"])[None, :], numeric)
        if state["scaling"] == "zscore":
            filled = (filled - np.asarray(state["shift"])) / np.asarray(state["scale"])
        elif state["scaling"] == "minmax":
            span = np.asarray(state["scale"])
            filled = (filled - np.asarray(state["shift"])) / np.where(span == 0, 1.0, span)
        parts.append(filled)
        if state.get("indicator_columns"):
            parts.append(missing[:, state["indicator_columns"]].astype(np.float64))
    if categorical.shape[1]:
        for j, categories in enumerate(state["categories"]):
            column = np.array([state["categorical_fill"][j] if v is None else str(v) for v in categorical[:, j]])
            index = {c: i for i, c in enumerate(categories)}
            codes = np.array([index.get(v, -1) for v in column])  # -1: a category not seen in training
            if state["encoding"] == "onehot":
                onehot = np.zeros((len(column), len(categories)))
                known = codes >= 0
                onehot[np.nonzero(known)[0], codes[known]] = 1.0
                parts.append(onehot)
            else:
                parts.append(np.where(codes >= 0, codes, len(categories)).astype(np.float64)[:, None])
    if not parts:
        raise UsageError("no feature columns left besides the target")
    return np.concatenate(parts, axis=1)


def apply_preprocessing(numeric: np.ndarray, categorical: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    """The fitted transform of rows: (N, F) float32 model inputs."""
    features = _encode(numeric, categorical, state)
    if state["reduction"] != "none":
        features = (features - np.asarray(state["reduction_mean"])) @ np.asarray(state["reduction_matrix"])
    return features.astype(np.float32)


def output_width(state: dict[str, Any], numeric_columns: int) -> int:
    """Width F of the rows ``apply_preprocessing`` gives."""
    if state["reduction"] != "none":
        return len(state["reduction_matrix"][0])
    width = numeric_columns + len(state.get("indicator_columns") or [])
    for categories in state.get("categories") or []:
        width += len(categories) if state["encoding"] == "onehot" else 1
    return width


def encoded_layout(state: dict[str, Any], numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    """Where each part of an encoded row (before any reduction) lies: ``indicators`` maps each numeric
    column with a missing-value indicator to the indicator's index; ``blocks`` is (first column, width)
    of each categorical column's one-hot group or ordinal code, in ``categorical``'s order."""
    indicators = list(state.get("indicator_columns") or [])
    start = len(numeric) + len(indicators)
    blocks = []
    for categories in (state.get("categories") or [])[:len(categorical)]:
        width = len(categories) if state["encoding"] == "onehot" else 1
        blocks.append((start, width))
        start += width
    return {"indicators": {numeric[i]: len(numeric) + k for k, i in enumerate(indicators)}, "blocks": blocks}


def nominal_blocks(state: dict[str, Any], numeric: list[str], categorical: list[str]) -> list[tuple[int, int]]:
    """(first column, width) of each block of an encoded row that holds a category, not a number: every
    missing-value indicator, every one-hot group or ordinal code. None after a reduction (all numbers then)."""
    if state["reduction"] != "none":
        return []
    layout = encoded_layout(state, numeric, categorical)
    return [(index, 1) for index in layout["indicators"].values()] + layout["blocks"]
