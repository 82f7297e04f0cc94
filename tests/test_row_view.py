"""A table network reads rows preprocessed for another exactly as its own fit writes them, or is refused in one line."""

import itertools
import re

import numpy as np
import pytest
import torch
from torch import nn

from distill.data.preprocess import apply_preprocessing, fit_preprocessing
from distill.errors import UsageError
from distill.models.row_view import RowView

SCHEMA = {"numeric": ["a", "b", "c"], "categorical": ["colour", "size"]}


def rows(n=80, seed=0, gaps=True):
    rng = np.random.default_rng(seed)
    numeric = rng.normal([3.0, -50.0, 0.0], [2.0, 10.0, 0.01], (n, 3))
    categorical = np.array([[rng.choice(["red", "green", "blue"]), rng.choice(["S", "M", "L", "XL"])]
                            for _ in range(n)], dtype=object)
    if gaps:
        numeric[rng.random((n, 3)) < 0.1] = np.nan
        categorical[rng.random((n, 2)) < 0.1] = None
    return numeric, categorical


def fit(numeric, categorical, **settings):
    labels = (np.nan_to_num(numeric[:, 0]) > 3).astype(int)
    return fit_preprocessing(numeric, categorical, labels, numeric_names=SCHEMA["numeric"],
                             categorical_names=SCHEMA["categorical"], **settings)


GIVEN = [dict(scaling=s, encoding=e, missing_indicator=True) for s, e in
         itertools.product(("zscore", "minmax", "none"), ("onehot", "ordinal"))]
OWN = [dict(scaling="zscore", encoding="onehot"), dict(scaling="none", encoding="ordinal", impute="median"),
       dict(scaling="minmax", encoding="onehot", missing_indicator=True, impute="most_frequent"),
       dict(scaling="zscore", encoding="onehot", reduction="pca", n_components=3),
       dict(scaling="minmax", encoding="ordinal", reduction="lda", n_components=1)]


@pytest.mark.parametrize("given", GIVEN, ids=lambda s: f"{s['scaling']}-{s['encoding']}")
@pytest.mark.parametrize("own", OWN, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_rows_are_re_encoded_as_the_networks_own_fit_writes_them(given, own):
    # the network's fit saw other rows (other means, categories in another order); the new rows hold a
    # category neither saw
    own_fit, given_fit = fit(*rows(seed=1), **own), fit(*rows(), **given)
    numeric, categorical = rows(seed=2, gaps=False)
    categorical[0, 1] = "XXL"
    view = RowView(nn.Identity(), own_fit, SCHEMA, given_fit, SCHEMA, gaps=set())
    student_rows = torch.from_numpy(apply_preprocessing(numeric, categorical, given_fit))
    expected = apply_preprocessing(numeric, categorical, own_fit)
    np.testing.assert_allclose(view.own_rows(student_rows).numpy(), expected, rtol=1e-5, atol=1e-5)


EXACT = [o for o in OWN if "reduction" not in o] + [dict(scaling="none", encoding="onehot")]


@pytest.mark.parametrize("given", GIVEN, ids=lambda s: f"{s['scaling']}-{s['encoding']}")
@pytest.mark.parametrize("own", EXACT, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_the_tables_own_numbers_come_back_exactly(given, own):
    """Bit for bit: a tree splits at 0 (LightGBM: 1e-35) and next to a filled gap's value, where a float32
    rounding left by undoing the rows' scaling would send the row the other way."""
    numeric, categorical = rows()
    numeric[::5, 0] = 0.0
    own_fit, given_fit = fit(numeric, categorical, **own), fit(numeric, categorical, **given)
    known = [torch.from_numpy(np.unique(column[~np.isnan(column)])) for column in numeric.T]
    gaps = set(SCHEMA["numeric"] + SCHEMA["categorical"])
    student_rows = torch.from_numpy(apply_preprocessing(numeric, categorical, given_fit))
    expected = apply_preprocessing(numeric, categorical, own_fit)
    view = RowView(nn.Identity(), own_fit, SCHEMA, given_fit, SCHEMA, gaps=gaps, known_values=known)
    np.testing.assert_array_equal(view.own_rows(student_rows).numpy(), expected)
    if own["scaling"] == "none" and given["scaling"] != "none":  # without the table's values: a rounding off
        rounded = RowView(nn.Identity(), own_fit, SCHEMA, given_fit, SCHEMA, gaps=gaps).own_rows(student_rows)
        assert (rounded.numpy()[::5, 0] != 0).any()


@pytest.mark.parametrize("given", GIVEN, ids=lambda s: f"{s['scaling']}-{s['encoding']}")
def test_rows_with_gaps_filled_alike(given):
    numeric, categorical = rows()  # both fitted on these rows with the same imputation: the same fills
    own_fit = fit(numeric, categorical, scaling="minmax", encoding="onehot", missing_indicator=True)
    given_fit = fit(numeric, categorical, **given)
    view = RowView(nn.Identity(), own_fit, SCHEMA, given_fit, SCHEMA, gaps=set(SCHEMA["numeric"] + SCHEMA["categorical"]))
    out = view.own_rows(torch.from_numpy(apply_preprocessing(numeric, categorical, given_fit)))
    np.testing.assert_allclose(out.numpy(), apply_preprocessing(numeric, categorical, own_fit), rtol=1e-5, atol=1e-5)


def test_gaps_filled_otherwise_are_refilled_through_the_missing_indicator():
    numeric, categorical = rows(gaps=False)
    numeric[::7, 1] = np.nan
    given_fit = fit(numeric, categorical, impute="mean", missing_indicator=True)
    own_fit = fit(numeric, categorical, impute="median")
    view = RowView(nn.Identity(), own_fit, SCHEMA, given_fit, SCHEMA, gaps={"b"})
    out = view.own_rows(torch.from_numpy(apply_preprocessing(numeric, categorical, given_fit)))
    np.testing.assert_allclose(out.numpy(), apply_preprocessing(numeric, categorical, own_fit), rtol=1e-5, atol=1e-5)


def test_columns_in_another_order_and_a_subset():
    numeric, categorical = rows()
    given_fit = fit(numeric, categorical, encoding="ordinal")
    own_schema = {"numeric": ["c", "a"], "categorical": ["size"]}
    own_fit = fit_preprocessing(numeric[:, [2, 0]], categorical[:, [1]], None)
    view = RowView(nn.Identity(), own_fit, own_schema, given_fit, SCHEMA, gaps=set())
    out = view.own_rows(torch.from_numpy(apply_preprocessing(numeric, categorical, given_fit)))
    np.testing.assert_allclose(out.numpy(), apply_preprocessing(numeric[:, [2, 0]], categorical[:, [1]], own_fit),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("given, own, own_schema, gaps, message", [
    (dict(reduction="pca"), {}, SCHEMA, set(), "reduced (pca)"),
    ({}, {}, {"numeric": ["a", "d"], "categorical": []}, set(), "column 'd'"),
    ({}, {}, {"numeric": ["a", "colour"], "categorical": []}, set(), "column 'colour'"),
    ({}, dict(impute="median"), SCHEMA, {"a"}, "column 'a' has gaps filled with"),
    ({}, dict(missing_indicator=True), SCHEMA, {"a"}, "marks the gaps of column 'a'"),
], ids=["reduced", "absent", "other-kind", "fill", "indicator"])
def test_what_cannot_be_turned_back_is_named(given, own, own_schema, gaps, message):
    numeric, categorical = rows()
    given_fit = fit(numeric, categorical, **given)
    # another schema: any fit of its width, refused before it is read
    own_fit = fit(numeric, categorical, **own) if own_schema is SCHEMA else \
        fit_preprocessing(np.nan_to_num(numeric[:, :2]), categorical[:, :0], None)
    with pytest.raises(UsageError, match=re.escape(message)):
        RowView(nn.Identity(), own_fit, own_schema, given_fit, SCHEMA, gaps)
