"""Properties of the CSV reader and the table preprocessing, on random tables (hypothesis).

The reader must give back exactly the table that was written, whatever its names, quoting,
separator, byte-order mark and blank lines, with every row's line in the file; the preprocessing
must equal scikit-learn's on random numbers with gaps.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from distill.data.preprocess import apply_preprocessing, fit_preprocessing  # noqa: E402
from distill.data.tabular import read_rows  # noqa: E402

# Text a cell may hold on one line: any letters (accents, CJK), digits, quotes and every separator.
CELL = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\ufeff"),
               max_size=8)
NAME = CELL.map(str.strip).filter(bool)


@st.composite
def tables(draw):
    names = draw(st.lists(NAME, min_size=1, max_size=5, unique=True))
    rows = draw(st.lists(st.lists(CELL, min_size=len(names), max_size=len(names)), min_size=1, max_size=8))
    rows = [r for r in rows if any(c.strip() for c in r)] or [["x"] * len(names)]  # a row of spaces is blank
    blank_after = draw(st.lists(st.integers(0, len(rows)), max_size=3))  # blank lines between rows
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    bom = draw(st.booleans())
    return names, rows, blank_after, delimiter, bom


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables())
def test_the_reader_gives_back_the_table_written_with_each_rows_line(tmp_path, table):
    names, rows, blank_after, delimiter, bom = table
    if delimiter != "," and len(names) == 1:
        delimiter = ","  # one column has no separator to find
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(names)
    lines, blanks, line = [], [], 1
    for i, row in enumerate(rows):
        for _ in range(blank_after.count(i)):
            buffer.write("\n")
            line += 1
            blanks.append(line)
        writer.writerow(row)
        line += 1
        lines.append(line)
    path = tmp_path / "t.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8"))
    header, got, got_lines, got_blanks = read_rows(path)
    assert header == names and got == rows and got_lines == lines and got_blanks == blanks


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 40), st.integers(1, 4), st.floats(0.0, 0.4), st.sampled_from(["mean", "median"]),
       st.sampled_from(["zscore", "minmax"]), st.integers(0, 2**31 - 1))
def test_imputation_and_scaling_equal_scikit_learn(rows, columns, missing, impute, scaling, seed):
    pytest.importorskip("sklearn")
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    rng = np.random.default_rng(seed)
    x = rng.normal(rng.uniform(-100, 100), rng.uniform(0.1, 50), (rows, columns))
    x[rng.random((rows, columns)) < missing] = np.nan
    x[0] = rng.normal(size=columns)  # every column keeps a value
    empty = np.empty((rows, 0), dtype=object)
    state = fit_preprocessing(x, empty, None, impute=impute, scaling=scaling)
    expected = (StandardScaler() if scaling == "zscore" else MinMaxScaler()).fit_transform(
        SimpleImputer(strategy=impute).fit_transform(x))
    assert np.allclose(apply_preprocessing(x, empty, state), expected, atol=1e-5)
