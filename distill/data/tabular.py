"""Table rows from a CSV file: a seeded split, the classic preprocessing fitted on the training rows, batches.

``--data tabular --data.path FILE.csv --data.target COLUMN`` (or ``--data.dataset penguins``, a
table a package ships) classifies rows with any registered model (``mlp_wide``, ``mlp_small``).
Implements ``distill.data.DistillData``, so both stages, the teacher cache and ``distill.evaluate``
work unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from distill.data.datamodule import EpochShuffle, IndexedTensors
from distill.data.preprocess import apply_preprocessing, fit_preprocessing, nominal_blocks, output_width
from distill.data.synthetic import MAKERS, gaussian, munge
from distill.errors import UsageError
from distill.tasks import get_task

MISSING = {"", "na", "nan", "null", "none", "?"}


def shipped_table(name: str) -> tuple[list[str], list[list[str]], str, Path]:
    """A table a Python package ships: header, rows, its target column and the file it came from.

    ``penguins`` (palmerpenguins: species from measurements, with missing values and categorical
    columns) and ``diabetes`` (scikit-learn's bundled copy: disease progression after one year, a
    regression target, from ten baseline measurements of 442 patients). Nothing is downloaded.
    """
    if name == "penguins":
        try:
            import palmerpenguins
        except ModuleNotFoundError:
            raise UsageError('dataset penguins needs the palmerpenguins package: pip install -e ".[tabular]"') from None
        path = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
        return *read_table(path), "species", path
    if name == "diabetes":
        try:
            import sklearn.datasets
        except ModuleNotFoundError:
            raise UsageError('dataset diabetes needs scikit-learn: pip install -e ".[tabular]"') from None
        bunch = sklearn.datasets.load_diabetes(scaled=False)  # the bundled file, unscaled: real units
        header = [*bunch.feature_names, "progression"]
        rows = [[repr(float(v)) for v in (*x, y)] for x, y in zip(bunch.data, bunch.target)]
        return header, rows, "progression", Path(sklearn.datasets.__file__).parent / "data" / "diabetes_data_raw.csv.gz"
    if name == "digits":
        try:
            import sklearn.datasets
        except ModuleNotFoundError:
            raise UsageError('dataset digits needs scikit-learn: pip install -e ".[tabular]"') from None
        bunch = sklearn.datasets.load_digits()  # bundled: 1,797 handwritten digits as 8x8 counts of 0-16
        header = [*(f"pixel_{i}" for i in range(64)), "digit"]
        rows = [[str(int(v)) for v in x] + [str(int(y))] for x, y in zip(bunch.data, bunch.target)]
        return header, rows, "digit", Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    if name == "randhie":
        return randhie()
    raise UsageError(f"unknown table {name!r}; valid: {', '.join(SHIPPED)} (or --data.path FILE.csv)")


SHIPPED = ("penguins", "diabetes", "digits", "randhie")


def randhie() -> tuple[list[str], list[list[str]], str, Path]:
    """The RAND Health Insurance Experiment table statsmodels ships (20,190 person-years): whether a person saw
    a doctor that year (``visited``: the count ``mdvis`` above 0, the count itself left out) from the plan's
    coinsurance, deductible and participation incentive, physical limitation, chronic diseases and self-rated
    health. Read from the package's own CSV file; nothing is imported from it and nothing is downloaded."""
    import importlib.util

    spec = importlib.util.find_spec("statsmodels")
    if spec is None or spec.origin is None:
        raise UsageError('dataset randhie needs the statsmodels package (it ships the table): pip install -e ".[tabular]"')
    path = Path(spec.origin).parent / "datasets" / "randhie" / "randhie.csv"
    header, rows = read_table(path)
    visits = header.index("mdvis")
    kept = [h for j, h in enumerate(header) if j != visits]
    rows = [[v for j, v in enumerate(r) if j != visits] + ["yes" if float(r[visits]) > 0 else "no"] for r in rows]
    return [*kept, "visited"], rows, "visited", path


def read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int], list[int]]:
    """Header, rows (strings), each row's line in the file, and the lines of blank rows (skipped).

    Line numbers are the file's (the header is line 1), so every message and every prediction
    names the row a user sees in an editor, blank lines counted.
    """
    if not path.is_file():
        raise UsageError(f"table {path} not found (moved since a checkpoint recorded it? evaluate, compress and predict "
                         "take --data_root DIR, its new folder)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a byte-order mark: not a name
    except UnicodeDecodeError as err:
        raise UsageError(f"table {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}, e.g. "
                         "latin-1 or Windows-1252): save it as CSV UTF-8") from None
    header: list[str] | None = None
    rows, lines, blank = [], [], []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter_of(text))
    for record in reader:
        if header is None:
            header = [h.strip() for h in record]
            if not header:
                raise UsageError(f"table {path} is empty")
        elif any(c.strip() for c in record):
            rows.append(record)
            lines.append(reader.line_num)
        else:
            blank.append(reader.line_num)
    if header is None:
        raise UsageError(f"table {path} is empty")
    if not rows:
        raise UsageError(f"table {path} has a header but no rows")
    bad = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
    if bad is not None:
        raise UsageError(f"table {path}, line {lines[bad]}: {len(rows[bad])} fields, the header has {len(header)}")
    return header, rows, lines, blank


DELIMITERS = ",;\t|"  # comma first: a header with a comma is read as comma-separated


def delimiter_of(text: str, sample: int = 6) -> str:
    """The field separator of a CSV text: of ``,;\t|``, the one that splits the header and the first rows
    into the same number of fields, the most (quotes respected; a comma on a tie or when none agrees)."""
    def counts(delimiter: str) -> list[int]:
        records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        return [len(r) for r in itertools.islice((r for r in records if any(c.strip() for c in r)), sample)]

    agreeing = {d: n[0] for d in DELIMITERS if (n := counts(d)) and len(set(n)) == 1}
    return max(agreeing, key=lambda d: (agreeing[d], d == ","), default=",")


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file (strings), blank rows skipped."""
    header, rows, _, _ = read_rows(path)
    return header, rows


def is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def parse_number(value: str, column: str, line: int) -> float:
    if is_missing(value):
        return float("nan")
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"column {column}, line {line}: {value!r} is not a number") from None


DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+(,\d+)?\s*$")


def check_decimal_commas(column: str, values: list[str]) -> None:
    """Refuses a column of numbers written with decimal commas, which would be read as words (or classes)."""
    present = [v for v in values if not is_missing(v)]
    if present and all(DECIMAL_COMMA.match(v) for v in present) and any("," in v for v in present):
        raise UsageError(f"column {column} holds numbers written with decimal commas (e.g. {present[0].strip()!r}): "
                         "save the file with decimal points")


def infer_task(values: list[str]) -> str:
    """``regression`` for a target of numbers that are not a handful of whole-number codes, else ``classification``."""
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return "classification"
    whole = all(n.is_integer() for n in numbers)
    return "classification" if whole and len(set(numbers)) <= MAX_CODES else "regression"


MAX_CODES = 20  # a whole-number target with at most this many values is read as class codes
MIN_ID_ROWS = 20  # below this many rows, distinct values on every row say nothing


def identifiers(header: list[str], rows: list[list[str]], columns: list[str]) -> list[str]:
    """Feature columns that look like row identifiers: whole numbers or words, different on every row, none missing."""
    if len(rows) < MIN_ID_ROWS:
        return []
    found = []
    for column in columns:
        values = [r[header.index(column)].strip() for r in rows]
        if any(is_missing(v) for v in values) or len(set(values)) < len(values):
            continue
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            found.append(column)  # a word per row: a name or a key
            continue
        if all(n.is_integer() for n in numbers):
            found.append(column)
    return found


# The --data settings each way of making synthetic rows reads
AUGMENT_SETTINGS = {"munge": ("augment_factor", "augment_swap", "augment_spread"),
                    "gaussian": ("augment_factor", "augment_noise")}


class TabularDataModule(LightningDataModule):
    """Rows of a CSV table for classification or regression, preprocessed as the training rows say.

    Args:
        path: The CSV file (a header line, then one row per sample).
        dataset: Instead of ``path``, a table a package ships: ``penguins`` (classification) or
            ``diabetes`` (regression).
        target: The column to predict (a shipped table knows its own).
        task: ``classification``, ``regression``, or ``auto``: regression when the target's values
            are all numbers and not just a few (at most 20) whole-number codes.
        numeric: Numeric feature columns; None: every column whose values all parse as numbers.
        categorical: Categorical feature columns; None: every other column.
        drop: Columns left out.
        val_fraction: Part of the rows held out for validation.
        test_fraction: Part of the rows held out for the test set.
        split_seed: Seed of the three-way split.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation, test and the cache.
        impute: Numeric imputation: ``mean``, ``median`` or ``most_frequent`` (categorical: the most
            frequent category).
        missing_indicator: Add a 0/1 column per numeric column that had missing training values.
        encoding: Categorical encoding: ``onehot`` or ``ordinal``.
        scaling: Numeric scaling: ``zscore``, ``minmax`` or ``none``.
        reduction: ``none``, ``pca`` or ``lda`` (on the encoded, scaled features).
        n_components: PCA: a number of components or a fraction of variance (default 0.95); LDA: at
            most classes - 1 (default).
        fitted: The fitted preprocessing, as plain values: filled in by fitting on the training rows
            and saved with every checkpoint (never set by hand).
        file_sha256: The table file's sha256 when the preprocessing was fitted (never set by hand): a
            rebuilt split of a changed file would move training rows into the test set, so it is refused.
        schema: The feature columns and class names as fitted (never set by hand): with ``fitted``,
            all that reading new rows needs.
        schema_only: Read no table: a module that only prepares new rows (``distill.predict``) from
            ``schema`` and ``fitted``, so a checkpoint or ONNX file predicts with its training CSV gone.
        augment: Synthetic training rows for a teacher to label (``distill.data.synthetic``): ``munge``
            (Bucilă et al. 2006: attributes moved toward the nearest row's) or ``gaussian`` (numbers
            jittered); ``none``. Made from the training rows only, never in validation or test; a
            distillation stage only (their label is the teacher's).
        augment_factor: Synthetic rows per training row.
        augment_swap: munge: probability that an attribute is moved toward the neighbour's.
        augment_spread: munge: the paper's s (a larger value keeps numbers closer to the neighbour's).
        augment_noise: gaussian: noise as a fraction of each numeric column's standard deviation.
    """

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        target: str | None = None,
        task: Literal["auto", "classification", "regression"] = "auto",
        numeric: list[str] | None = None,
        categorical: list[str] | None = None,
        drop: list[str] | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 1024,
        impute: Literal["mean", "median", "most_frequent"] = "mean",
        missing_indicator: bool = False,
        encoding: Literal["onehot", "ordinal"] = "onehot",
        scaling: Literal["zscore", "minmax", "none"] = "zscore",
        reduction: Literal["none", "pca", "lda"] = "none",
        n_components: float | None = None,
        fitted: dict[str, Any] | None = None,
        file_sha256: str | None = None,
        schema: dict[str, list[str]] | None = None,
        schema_only: bool = False,
        augment: Literal["none", "munge", "gaussian"] = "none",
        augment_factor: int = 1,
        augment_swap: float = 0.5,
        augment_spread: float = 1.0,
        augment_noise: float = 0.1,
    ) -> None:
        super().__init__()
        if schema_only and fitted is not None and schema is not None:
            self.save_hyperparameters()
            self._from_schema(path or dataset or "", target, task, schema, fitted, batch_size, eval_batch_size)
            return
        if (path is None) == (dataset is None):
            raise UsageError("tabular data needs --data.path FILE.csv or --data.dataset NAME (one of the two)")
        if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise UsageError(f"val_fraction and test_fraction must leave training rows, got {val_fraction}, {test_fraction}")
        if batch_size < 1 or eval_batch_size < 1:
            raise UsageError("batch sizes must be >= 1")
        if augment not in ("none", *MAKERS):
            raise UsageError(f"--data.augment {augment!r}; valid: none, {', '.join(MAKERS)}")
        if augment_factor < 1:
            raise UsageError(f"--data.augment_factor must be >= 1, got {augment_factor}")
        defaults = inspect.signature(TabularDataModule.__init__).parameters
        set_here = {name: value for name, value in (("augment_factor", augment_factor), ("augment_swap", augment_swap),
                                                     ("augment_spread", augment_spread), ("augment_noise", augment_noise))
                    if value != defaults[name].default}
        unused = [name for name in set_here if name not in AUGMENT_SETTINGS.get(augment, ())]
        if unused:  # a setting with no effect would let a run claim what it did not do
            users = [maker for maker, names in AUGMENT_SETTINGS.items() if unused[0] in names]
            raise UsageError(f"--data.{unused[0]} {set_here[unused[0]]} has no effect with --data.augment {augment}; "
                             f"it sets --data.augment {' or '.join(users)}")
        if dataset:
            header, rows, shipped_target, self.file = shipped_table(dataset)
            lines = list(range(2, len(rows) + 2))
        else:
            self.file = Path(path)  # type: ignore[arg-type]
            header, rows, lines, _ = read_rows(self.file)
            shipped_target = None
        self.target = target or shipped_target
        if not self.target:
            raise UsageError("--data.target COLUMN: which column to predict")
        if self.target not in header:
            raise UsageError(f"column {self.target!r} is not in {self.file} (columns: {', '.join(header)})")
        t = header.index(self.target)
        for j, column in enumerate(header):
            check_decimal_commas(column, [r[j] for r in rows])
        if task == "auto":
            task = infer_task([r[t].strip() for r in rows if not is_missing(r[t])])
            rank_zero_info(f"task: {task} (target {self.target}; --data.task sets it)")
        self.task = task
        digest = hashlib.sha256(self.file.read_bytes()).hexdigest()
        if file_sha256 is not None and file_sha256 != digest:
            raise UsageError(f"table {self.file} changed since the model was trained on it (sha256 {file_sha256[:12]}... "
                             f"then, {digest[:12]}... now): its rebuilt split would hold other rows, the test rows "
                             "among them; restore the file, or train on the new one")
        self.save_hyperparameters()  # with the task as resolved: a rebuilt module reads the same
        self.hparams["file_sha256"] = digest
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self._columns(header, rows, numeric, categorical, drop or [])
        self._split_and_fit(header, rows, lines, fitted)

    def _from_schema(self, source: str, target: str | None, task: str, schema: dict[str, list[str]],
                     fitted: dict[str, Any], batch_size: int, eval_batch_size: int) -> None:
        """Only what preparing new rows needs, from the plain values a checkpoint carries: no file is read."""
        self.file, self.target, self.task = Path(source), target, task
        self.numeric_columns, self.categorical_columns = list(schema["numeric"]), list(schema["categorical"])
        self.classes, self.fitted = tuple(schema["classes"]), fitted
        self.gaps = frozenset([*self.numeric_columns, *self.categorical_columns])  # unknown: any column may have gaps
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size

    # -- reading -------------------------------------------------------------------------------------------------
    def _columns(self, header: list[str], rows: list[list[str]], numeric: list[str] | None,
                 categorical: list[str] | None, drop: list[str]) -> None:
        for name in [*(numeric or []), *(categorical or []), *drop]:  # the target was checked on reading
            if name not in header:
                raise UsageError(f"column {name!r} is not in {self.file} (columns: {', '.join(header)})")
        for flag, names in (("numeric", numeric), ("categorical", categorical), ("drop", drop)):
            if self.target in (names or []):
                raise UsageError(f"--data.{flag} lists the target {self.target!r}: the label would be one of the "
                                 "inputs it is predicted from; leave it out of the feature lists")
        features = [h for h in header if h != self.target and h not in drop]

        def all_numbers(column: str) -> bool:
            j = header.index(column)
            values = [r[j] for r in rows if not is_missing(r[j])]
            try:
                [float(v) for v in values]
            except ValueError:
                return False
            return bool(values)

        if numeric is None:
            numeric = [c for c in features if c not in (categorical or []) and all_numbers(c)]
        if categorical is None:
            categorical = [c for c in features if c not in numeric]
        self.numeric_columns, self.categorical_columns = list(numeric), list(categorical)
        for column in identifiers(header, rows, [*self.numeric_columns, *self.categorical_columns]):
            rank_zero_warn(f"column {column!r} takes a different value on every one of the {len(rows)} rows, like "
                           f"an ID or a saved index: it is used as a feature; --data.drop '{json.dumps([column])}' leaves it out")

    def parse_rows(self, header: list[str], rows: list[list[str]], lines: list[int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Numeric (N, n) floats (NaN missing) and categorical (N, m) strings (None missing) of ``rows``
        (``lines``: their lines in the file, for messages; default: consecutive from line 2).

        Raises:
            UsageError: a column missing from ``header``, a non-number in a numeric column.
        """
        for name in [*self.numeric_columns, *self.categorical_columns]:
            if name not in header:
                raise UsageError(f"column {name!r} is missing (the model was trained with it)")
        num_idx = [header.index(c) for c in self.numeric_columns]
        cat_idx = [header.index(c) for c in self.categorical_columns]
        lines = lines or list(range(2, len(rows) + 2))
        numeric = np.array([[parse_number(r[j], header[j], line) for j in num_idx]
                            for r, line in zip(rows, lines)], dtype=np.float64).reshape(len(rows), len(num_idx))
        categorical = np.array([[None if is_missing(r[j]) else r[j].strip() for j in cat_idx] for r in rows],
                               dtype=object).reshape(len(rows), len(cat_idx))
        return numeric, categorical

    def _split_and_fit(self, header: list[str], rows: list[list[str]], lines: list[int],
                       fitted: dict[str, Any] | None) -> None:
        t = header.index(self.target)
        kept = [i for i, r in enumerate(rows) if not is_missing(r[t])]  # rows without a target teach nothing
        rows, lines = [rows[i] for i in kept], [lines[i] for i in kept]
        values = [r[t].strip() for r in rows]
        task = get_task(self.task)
        labels, self.classes = task.encode_targets(values, self.target, lines)
        n_rows = len(rows)
        n_test = max(1, round(n_rows * self.hparams.test_fraction))
        n_val = round(n_rows * self.hparams.val_fraction)
        if n_rows - n_test - n_val < 2 or n_test < task.min_eval_rows or 0 < n_val < task.min_eval_rows:
            raise UsageError(f"{self.file.name} has {n_rows} rows with a target: {n_test} for test and {n_val} for "
                             f"validation leave {n_rows - n_test - n_val} to train on; a {task.name} needs at least "
                             f"2 training rows and {task.min_eval_rows} in each split it is scored on: more rows")
        if task.has_classes and len(self.classes) > max(MAX_CODES, n_rows // 2):
            rank_zero_warn(f"target {self.target} takes {len(self.classes)} values over {n_rows} rows, most seen once "
                           "or twice: if it is a number, --data.task regression")
        if n_val == 0:
            rank_zero_warn(f"{n_rows} rows x val_fraction {self.hparams.val_fraction} leave no validation rows: the "
                           f"best checkpoint is chosen on the {n_test} test rows, so the test figures are optimistic "
                           "(raise --data.val_fraction or use more rows)")
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(self.hparams.split_seed)).numpy()
        test, val, train = np.sort(order[:n_test]), np.sort(order[n_test:n_test + n_val]), np.sort(order[n_test + n_val:])
        numeric, categorical = self.parse_rows(header, rows, lines)
        # every number each column holds, in raw units: rows re-encoded for another fit are given back these exactly
        self.numeric_values = [torch.from_numpy(np.unique(column[~np.isnan(column)])) for column in numeric.T]
        self.gaps = frozenset([c for j, c in enumerate(self.numeric_columns) if np.isnan(numeric[:, j]).any()] +
                              [c for j, c in enumerate(self.categorical_columns) if (categorical[:, j] == None).any()])  # noqa: E711
        # The training array that batch indices point into: training rows, then validation rows.
        pool = np.concatenate([train, val])
        if fitted is None:  # fitted on the training rows only, never on validation or test rows
            h = self.hparams
            if not task.has_classes and h.reduction == "lda":
                raise UsageError(f"--data.reduction lda needs classes; a {task.name} target has none (use pca)")
            fitted = fit_preprocessing(numeric[train], categorical[train], labels[train], impute=h.impute,
                                       missing_indicator=h.missing_indicator, encoding=h.encoding, scaling=h.scaling,
                                       reduction=h.reduction, n_components=h.n_components,
                                       numeric_names=self.numeric_columns, categorical_names=self.categorical_columns)
            fitted = {**fitted, **task.fit_targets(labels[train])}
            self.hparams["fitted"] = fitted  # saved with every checkpoint: evaluation applies the same transform
            self.hparams["schema"] = {"numeric": list(self.numeric_columns), "categorical": list(self.categorical_columns),
                                      "classes": list(self.classes)}
        self.fitted = fitted
        features = torch.from_numpy(apply_preprocessing(numeric, categorical, fitted))
        targets = task.target_tensor(labels)
        self.train_x, self.train_y = features[pool], targets[pool]
        self.test_x, self.test_y = features[test], targets[test]
        self.train_set = IndexedTensors(self.train_x, self.train_y, torch.arange(len(train)))
        self.real_train = torch.arange(len(train))  # the labelled training rows (synthetic ones follow the pool)
        self.synthetic_rows = 0
        self.val_set = IndexedTensors(self.train_x, self.train_y, torch.arange(len(train), len(pool)))
        self.test_set = IndexedTensors(self.test_x, self.test_y, torch.arange(len(test)))
        digest = hashlib.sha256(self.file.read_bytes())
        digest.update(repr((self.target, self.numeric_columns, self.categorical_columns, sorted(self.hparams.items(),
                                                                                                key=lambda kv: kv[0]))).encode())
        self._fingerprint = digest.hexdigest()

    # -- DistillData -----------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return get_task(self.task).output_width(self.classes)

    @property
    def target_scale(self) -> tuple[float, float] | None:
        """What the task scales outputs by: a regression's training-target mean and std (None for classification)."""
        return get_task(self.task).target_scale(self.fitted)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (output_width(self.fitted, len(self.numeric_columns)),)

    mirror_keeps_class = property(lambda self: False)
    border_fill = property(lambda self: None)

    def random_transforms(self) -> frozenset[str]:
        return frozenset()

    def fingerprint(self) -> str:
        return self._fingerprint

    def num_training_samples(self) -> int:
        return len(self.train_x)

    def training_inputs(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.train_x), self.eval_batch_size):
            idx = torch.arange(start, min(start + self.eval_batch_size, len(self.train_x)))
            yield self.train_x[idx], idx

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.test_x), self.eval_batch_size):
            yield self.test_x[start:start + self.eval_batch_size], self.test_y[start:start + self.eval_batch_size]

    def labelled_rows(self, part: Literal["train", "val"]) -> tuple[Tensor, Tensor]:
        """The model-ready rows (N, F) and targets (N,) of the training or the validation part, in order (a model
        fitted on all rows at once, such as gradient-boosted trees, reads them); never synthetic rows."""
        indices = self.real_train if part == "train" else self.val_set.indices
        return self.train_x[indices], self.train_y[indices]

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.get("augment", "none") != "none" and not self.synthetic_rows:
            self._add_synthetic_rows()

    def _add_synthetic_rows(self) -> None:
        """Appends the synthetic rows after the training and validation rows; training batches draw from both."""
        h = self.hparams
        rows = self.train_x[self.real_train]
        nominal = nominal_blocks(self.fitted, self.numeric_columns, self.categorical_columns)
        if h.augment == "munge":
            made = munge(rows, nominal, h.augment_factor, h.augment_swap, h.augment_spread, seed=h.split_seed)
        else:
            made = gaussian(rows, nominal, h.augment_factor, h.augment_noise, seed=h.split_seed)
        first = len(self.train_x)
        unlabelled = torch.full((len(made),), get_task(self.task).missing_label, dtype=self.train_y.dtype)
        self.train_x = torch.cat([self.train_x, made.to(self.train_x.dtype)])
        self.train_y = torch.cat([self.train_y, unlabelled])
        indices = torch.cat([self.real_train, torch.arange(first, first + len(made))])
        self.train_set = IndexedTensors(self.train_x, self.train_y, indices)
        self.val_set = IndexedTensors(self.train_x, self.train_y, self.val_set.indices)
        self.synthetic_rows = len(made)
        rank_zero_info(f"{len(made)} synthetic training rows ({h.augment}, {h.augment_factor} per training row), "
                       "labelled by the teacher; validation and test rows are the table's own")

    def read_table_file(self, path: Path) -> tuple[Tensor, list[int], list[int]]:
        """Rows of another CSV with the same feature columns, as model inputs (the training transform),
        with each row's line in the file and the lines of blank rows."""
        header, rows, lines, blank = read_rows(path)
        numeric, categorical = self.parse_rows(header, rows, lines)
        return torch.from_numpy(apply_preprocessing(numeric, categorical, self.fitted)), lines, blank

    # -- loaders -----------------------------------------------------------------------------------------------------
    def _loader(self, dataset: IndexedTensors, batch_size: int, shuffle: bool) -> DataLoader:
        epoch = (lambda: self.trainer.current_epoch if self.trainer is not None else 0)
        sampler = EpochShuffle(len(dataset), torch.initial_seed(), epoch) if shuffle else SequentialSampler(dataset)
        # The only batch of a table smaller than one batch is trained on, never dropped.
        batches = BatchSampler(sampler, batch_size, drop_last=shuffle and len(dataset) > batch_size)
        return DataLoader(dataset, sampler=batches, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set if len(self.val_set) else self.test_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)


def table_text(header: list[str], rows: list[list[str]]) -> str:
    """A CSV file's text (tests and examples write tables with it)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
