"""Command line: ``python -m distill.predict --model PATH --input DIR_OR_FILE --out predictions.csv``.

Runs any artifact, a checkpoint or an ``.onnx`` file from ``distill.compress``, on image files (or
the rows of a CSV table, for a network trained on a table) with the preprocessing the network was
trained with (read from the checkpoint, or from the ``.json`` written beside the ONNX file), and
writes the predicted class, its probability and the top-k, or the predicted value of a regression.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from distill.checkpoint import rebuild_data
from distill.data.interface import task_of
from distill.inference import load_artifact
from distill.tasks import get_task
from distill.errors import OneLineParser, UsageError, exit_code
from distill.run_dir import atomic_write_text, check_output_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def model_and_data(path: Path) -> tuple[Any, Any]:
    """The classifier in ``path`` and the DataModule that prepares its inputs.

    A checkpoint names its DataModule and arguments itself; an ONNX file has them in the ``.json``
    beside it. The DataModule class comes from the registry by name, never from an import path in a file.
    """
    trained = load_artifact(path)
    model, data = trained.network, rebuild_data(trained, rows=False)  # a table's training CSV is not needed
    name = trained.data_module or "images"
    if not hasattr(data, "read_files") and not hasattr(data, "read_table_file"):
        raise UsageError(f"the {name} data module cannot read input files (it has no read_files or read_table_file)")
    return model, data


def input_batches(data: Any, source: Path, batch_size: int) -> tuple[list[tuple[list[str], torch.Tensor]], list[str]]:
    """Batches of (names, model-ready inputs) of what ``source`` holds, and the names of inputs left out.

    Image files are named by their path; the rows of a CSV table by their line in the file, and its
    blank rows are the ones left out (said in the output, never silently dropped).
    """
    if hasattr(data, "read_table_file"):
        inputs, lines, blank = read_table(data, source)
        names = [str(line) for line in lines]
        return [(names[i:i + batch_size], inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)], \
            [str(line) for line in blank]
    files = input_files(source)
    return [([str(p) for p in files[i:i + batch_size]], data.read_files(files[i:i + batch_size]))
            for i in range(0, len(files), batch_size)], []


def input_files(source: Path) -> list[Path]:
    """``source`` itself, or every image file below it, in a stable order."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UsageError(f"--input {source}: no such file or directory")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--input {source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_table(data: Any, source: Path) -> tuple[torch.Tensor, list[int], list[int]]:
    """The CSV rows to predict as model inputs, their lines, and the lines of blank rows."""
    if not source.is_file():
        raise UsageError(f"--input {source}: a network trained on a table predicts the rows of a CSV file")
    return data.read_table_file(source)


@torch.no_grad()
def predict(model_path: Path, source: Path, out: Path, top_k: int = 3, batch_size: int = 256) -> list[dict[str, Any]]:
    """Predicts every input file (or table row) and writes the CSV atomically; returns its rows.

    A table's rows are named by their line in the file (the header is line 1); each has a ``status``
    (``ok``, or ``blank row`` for a line with no values, whose prediction cells are empty).
    """
    model, data = model_and_data(model_path)
    model = model.eval()
    task = get_task(task_of(data))
    classes = list(data.class_names) or [str(i) for i in range(data.num_classes)]
    column = "line" if hasattr(data, "read_table_file") else "file"
    k = max(1, min(top_k, len(classes)))
    rows: list[dict[str, Any]] = []
    with Progress(transient=True) as progress:
        bar = progress.add_task("predicting", total=None)
        batches, blank = input_batches(data, source, batch_size)
        for names, inputs in batches:
            outputs = model(inputs).float()  # (B, K) logits, or (B, 1) predicted values
            rows += [{column: name, **fields} for name, fields in zip(names, task.prediction_rows(outputs, classes, k))]
            progress.advance(bar, len(names))
    if not rows:
        raise UsageError(f"--input {source}: nothing to predict")
    if column == "line":  # one output row per input row, in the file's order
        rows = [{**row, "status": "ok"} for row in rows]
        rows += [{column: line, **{key: "" for key in rows[0] if key not in (column, "status")}, "status": "blank row"}
                 for line in blank]
        rows.sort(key=lambda row: int(row[column]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, buffer.getvalue())
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m distill.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint (.ckpt) or an ONNX file from distill.compress")
    parser.add_argument("--input", required=True, help="an image file, or a folder searched recursively for images; "
                                                       "for a network trained on a table, a CSV file of rows")
    parser.add_argument("--out", default="predictions.csv", help="the CSV to write (default predictions.csv)")
    parser.add_argument("--top_k", type=int, default=3, help="classes listed per input, most probable first")
    parser.add_argument("--batch_size", type=int, default=256, help="inputs per forward pass")
    args = parser.parse_args(argv)

    def run() -> None:
        if args.top_k < 1 or args.batch_size < 1:
            raise UsageError("--top_k and --batch_size must be >= 1")
        check_output_file(Path(args.out), "--out")
        rows = predict(Path(args.model), Path(args.input), Path(args.out), args.top_k, args.batch_size)
        blank = sum(row.get("status") == "blank row" for row in rows)
        print(f"{len(rows) - blank} predictions{f' and {blank} blank rows marked' if blank else ''} -> {args.out}")

    return exit_code(run)


if __name__ == "__main__":
    raise SystemExit(main())
