"""Command line: ``python -m distill.evaluate`` compares trained checkpoints on the test set.

Quality (accuracy, top-5, F1, AUROC, calibration, NLL, agreement with the teacher, confusion; for
regression MSE, RMSE, MAE, R², distance to the teacher's predictions, predicted against true),
cost (parameters, exported size, FLOPs, latency, throughput) and the headline ratios, as a rich
table, ``compare.json``, ``compare.md`` and PNG plots in ``--out_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from distill import cost, plots
from distill.checkpoint import Trained, rebuild_data
from distill.data.split import SPLIT
from distill.errors import OneLineParser, UsageError, exit_code
from distill.export import OnnxClassifier, file_bytes
from distill.inference import load_artifact, test_outputs
from distill.models.row_view import row_view
from distill.models.teacher_view import as_trained
from distill.models.tta import TTA_VIEWS, label, with_tta
from distill.run_dir import atomic_write, atomic_write_text, check_output_dir
from distill.tasks import Task, get_task
from distill.teacher import Teacher, TeacherSettings, build_teacher
from distill.teacher.sources import KINDS

DEFAULT_TEACHER = "checkpoints/teacher/best.ckpt"
DEFAULT_STUDENTS = ["checkpoints/student/best.ckpt"]


def name_models(paths: list[Path]) -> list[str]:
    """Report names: a run directory's name for its best/last checkpoint, else the file's own name (an ONNX
    file's with its suffix), made unique."""
    names: list[str] = []
    for path in paths:
        folder = path.resolve().parent.name
        base = path.name if path.suffix == ".onnx" else (folder if path.stem in ("best", "last") and folder
                                                        else path.stem)
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def check_same_task(models: list[Trained]) -> None:
    """All checkpoints must come from the same dataset, class count and input shape."""
    first = models[0]
    for other in models[1:]:
        for what, a, b in (
            ("dataset", first.data_hparams.get("dataset"), other.data_hparams.get("dataset")),
            ("task", first.hparams.get("task", "classification"), other.hparams.get("task", "classification")),
            ("class count", first.hparams["num_classes"], other.hparams["num_classes"]),
            # a table's width follows its preprocessing: rows are re-encoded per network (``reading_rows``)
            *((("input shape", tuple(first.hparams["input_shape"]), tuple(other.hparams["input_shape"])),)
              if first.data_hparams.get("fitted") is None else ()),
            # the test rows are split once, as the first model's were: another split holds its training rows
            *((f"table split ({key})", first.data_hparams.get(key), other.data_hparams.get(key)) for key in SPLIT
              if first.data_hparams.get("fitted") is not None),
        ):
            if a != b:
                values = f" ({a} vs {b})" if len(f"{a}{b}") < 120 else ""  # a fitted preprocessing is too long to show
                raise UsageError(f"{first.path} and {other.path} differ in {what}{values}; "
                                 "compare checkpoints of the same task")


def reading_rows(network: Any, trained: Trained, data: Any, first: Path) -> Any:
    """``network`` (or its exported file's runner) reading ``data``'s rows as its own fitted preprocessing
    wrote them (``row_view``): a table network fitted otherwise than the test data still scores its own rows.

    Raises:
        UsageError: its rows cannot be rebuilt from these, in one line naming both checkpoints.
    """
    try:
        return row_view(network, trained.data_hparams, data)
    except UsageError as error:
        raise UsageError(f"{trained.path} was trained on rows preprocessed otherwise than {first}'s "
                         f"and cannot read them: {error}") from None


def is_built_teacher(spec: str) -> bool:
    """Whether ``--teacher`` names a built teacher (``torchvision:resnet18``) rather than a file."""
    kind, _, name = spec.partition(":")
    return kind in KINDS and bool(name)


def built_teacher(spec: str, students: list[Trained]) -> Trained:
    """A teacher typed as a spec, rebuilt with the weights, arguments and adapters a student recorded for it.

    Only settings (plain values) come from the checkpoint; code is imported only from ``spec``, as typed.

    Raises:
        UsageError: no student was distilled from ``spec``.
    """
    student = next((s for s in students if s.hparams.get("teacher") == spec), None)
    if student is None:
        raise UsageError(f"--teacher {spec}: none of the students was distilled from it, so its weights and "
                         "adapters are unknown; compare against the students' own teacher")
    hp, shape, classes = student.hparams, tuple(student.hparams["input_shape"]), student.hparams["num_classes"]
    # Its own network, without the views it taught with: --teacher_tta chooses those, as for any teacher.
    settings = dataclasses.replace(TeacherSettings.from_hparams(hp, spec=spec), tta="none")
    network = build_teacher(settings, classes, shape, hp.get("task", "classification"))
    return Trained(Path(spec), network, {"model": spec, "num_classes": classes, "input_shape": list(shape),
                                         "task": hp.get("task", "classification")},
                   student.data_hparams, student.data_module)


@dataclass
class Measured:
    """One model measured on the test set and the CPU (and GPU), before it is compared with any other."""

    name: str
    role: str  # teacher or student
    checkpoint: str
    model: str  # the architecture, with the view set it was evaluated under
    test_samples: int
    quality: dict[str, Any]  # the task's figures (``Task.quality``)
    format: str
    params: int
    flops: int | None  # None: runs outside torch (trees), its work not counted
    weights_bytes: int
    cpu: dict[str, float]
    gpu: dict[str, float] | None = None
    method: str | None = None  # a distilled student's method and settings, as it ran
    method_settings: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        """The plain row ``compare.json`` holds (quality figures at the top level)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "quality" and v is not None}
        return {**{k: out.pop(k) for k in ("name", "role", "checkpoint", "model", "test_samples")}, **self.quality, **out}


def measure(name: str, role: str, trained: Trained, classifier: Any, tta: str, data: Any, device: torch.device,
            task: Task, latency_runs: int) -> tuple[Measured, Tensor, Tensor]:
    """Quality on the whole test set and cost of one model; also its test outputs and the labels."""
    outputs, labels = test_outputs(classifier, data, device)
    input_shape = tuple(trained.hparams["input_shape"])
    model = classifier.cpu()
    if isinstance(model, OnnxClassifier):  # its source's counts, recorded by distill.compress
        counts = {"format": trained.hparams["format"], "params": trained.hparams["params"],
                  "flops": trained.hparams["flops"], "weights_bytes": file_bytes(trained.path)}
    else:
        counts = {"format": "onnxruntime" if cost.runs_outside_torch(model) else "pytorch fp32",
                  **cost.cost(model, input_shape)}
    gpu = None
    if torch.cuda.is_available() and isinstance(model, nn.Module):
        gpu = cost.speed(model, input_shape, torch.device("cuda"), runs=latency_runs)
        model.cpu()
    measured = Measured(name, role, str(trained.path), label(trained.hparams["model"], tta), len(labels),
                        task.quality(outputs, labels), cpu=cost.speed(model, input_shape, torch.device("cpu"),
                                                                       runs=latency_runs),
                        gpu=gpu, method=trained.hparams.get("method") if trained.hparams.get("method_settings") is not None
                        else None, method_settings=trained.hparams.get("method_settings"), **counts)
    return measured, outputs, labels


def compare(measured: list[Measured], outputs: list[Tensor], task: Task) -> list[dict[str, Any]]:
    """Rows of the report: each model's measurements, and each student's closeness and ratios to the teacher."""
    rows = [m.row() for m in measured]
    base = rows[0]
    for row, output in zip(rows[1:], outputs[1:]):
        key, value = task.closeness(output, outputs[0])
        row[f"{key}_teacher"] = value
        row["ratios"] = {
            "params": row["params"] / base["params"],
            "flops": row["flops"] / base["flops"] if row.get("flops") and base.get("flops") else None,
            "cpu_latency": row["cpu"]["latency_ms"] / base["cpu"]["latency_ms"],
            "cpu_throughput": row["cpu"]["throughput"] / base["cpu"]["throughput"],
            **task.kept(row, base),
        }
    return rows


def load_models(teacher: Path, students: list[Path]) -> list[Trained]:
    """The teacher (a file, or a spec a student recorded) and the students, checked to share one task."""
    # Rebuilt from what a student recorded (read the students first): a spec, or an ONNX file of another
    # framework, whose inputs and outputs only the student's settings describe.
    foreign_onnx = teacher.suffix == ".onnx" and not teacher.with_suffix(".json").is_file()
    if is_built_teacher(str(teacher)) or foreign_onnx:
        students_loaded = [load_artifact(p) for p in students]
        models = [built_teacher(str(teacher), students_loaded), *students_loaded]
    else:
        models = [load_artifact(p) for p in [teacher, *students]]
    check_same_task(models)
    return models


def evaluate(teacher: Path, students: list[Path], out_dir: Path, data_root: str | None = None,
             batch_size: int = 1000, latency_runs: int = 30, device: str = "auto",
             console: Console | None = None, export_safetensors: bool = False,
             teacher_tta: str | None = None) -> dict[str, Any]:
    """Measures every model, compares them, and writes and prints the report; returns what ``compare.json`` holds.

    ``teacher_tta`` evaluates the teacher averaged over those test-time views, as a student stage's
    ``--model.teacher_tta`` taught with it (shifted views bordered as the data's training crop pads).
    """
    if teacher_tta and teacher.suffix == ".onnx":
        raise UsageError("--teacher_tta needs the teacher's checkpoint, not an ONNX file")
    models = load_models(teacher, students)
    names = name_models([teacher, *students])
    data = rebuild_data(models[0], data_root, batch_size)
    data.setup("test")
    if isinstance(models[0].network, Teacher):
        models[0].network.attach(data)
    # The views each classifier is evaluated under: the teacher's as asked (or as its stage once
    # recorded), every other network as it is.
    views = [teacher_tta or models[0].hparams.get("tta", "none"), *(["none"] * len(students))]
    eval_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                               ("cpu" if device == "auto" else device))
    task = get_task(models[0].hparams.get("task"))

    measured, outputs = [], []
    for i, (name, trained, tta) in enumerate(zip(names, models, views)):
        # images normalized otherwise than the test data's: each network reads them as it was trained
        # and a table fitted otherwise reads the test rows as its own fit writes them
        network = as_trained(trained.network, trained.data_hparams, getattr(data, "normalization", None))
        network = reading_rows(network, trained, data, models[0].path)
        classifier = with_tta(network, tta, data.border_fill)
        m, output, labels = measure(name, "teacher" if i == 0 else "student", trained, classifier, tta, data,
                                    eval_device, task, latency_runs)
        measured.append(m)
        outputs.append(output)
    entries = compare(measured, outputs, task)
    classes = (list(data.class_names) or [str(i) for i in range(data.num_classes)]) if task.has_classes else []
    dataset = models[0].data_hparams.get("dataset") or Path(models[0].data_hparams.get("path") or "?").name
    report = {"dataset": dataset, "task": task.name, "classes": classes,
              "cpu_threads": torch.get_num_threads(), "input_rank": len(models[0].hparams["input_shape"]),
              "models": entries}

    out_dir.mkdir(parents=True, exist_ok=True)
    figures = task.plots(entries, [(o, labels) for o in outputs], classes, out_dir)
    figures["curves"] = plots.training_curves([(n, m.path.parent / "logs" / "metrics.csv") for n, m in zip(names, models)],
                                              out_dir / "training_curves.png", task.monitor, task.headline_label,
                                              task.plot_scale, task.loss_term)
    report["figures"] = {k: str(v) for k, v in figures.items() if v is not None}
    if export_safetensors:
        for entry, trained in zip(entries, models):
            if isinstance(trained.network, nn.Module):
                entry["safetensors"] = str(export_weights(trained.network, out_dir / f"{entry['name']}.safetensors"))
    atomic_write_text(out_dir / "compare.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "compare.md", markdown(report))
    show(report, out_dir, console or Console())
    return report


def show(report: dict[str, Any], out_dir: Path, console: Console) -> None:
    """Prints the report: the two tables, each student's ratios in words, where the files are."""
    task, base = get_task(report["task"]), report["models"][0]
    console.print(summary_table(report))
    for entry in report["models"][1:]:
        r = entry["ratios"]
        console.print(f"{entry['name']}: {r['params']:.3f}x parameters, {times(r['flops'], 3)} FLOPs, "
                      f"{r['cpu_latency']:.2f}x CPU latency of {base['name']}; {' '.join(task.kept_text(r))}")
    console.print(f"report: {out_dir / 'compare.md'}, {out_dir / 'compare.json'}, "
                  f"{', '.join(Path(p).name for p in report['figures'].values())}")


def times(ratio: float | None, digits: int) -> str:
    """A ratio as ``0.123x``; ``n/a`` where one side's work is not counted (a model running outside torch)."""
    return "n/a" if ratio is None else f"{ratio:.{digits}f}x"


def mflops(flops: int | None) -> str:
    """FLOPs in millions; ``n/a`` for a model that runs outside torch (trees), whose work is not counted."""
    return "n/a" if flops is None else f"{flops / 1e6:.1f}"


COST = ["model", "arch", "format", "params", "size KB", "MFLOPs", "CPU ms", "CPU img/s"]


def _quality_header(report: dict[str, Any]) -> list[str]:
    return ["model", *get_task(report.get("task")).report_columns]


def _cost_header(report: dict[str, Any]) -> list[str]:
    return [*COST[:-1], "CPU rows/s"] if _samples(report) == "rows" else COST


def _samples(report: dict[str, Any]) -> str:
    """What a test sample is called: rows of a table, else images."""
    return get_task(report.get("task")).samples(report.get("input_rank", 3))


def export_weights(model: torch.nn.Module, path: Path) -> Path:
    """Writes the weights as safetensors (tensors and a JSON header only: nothing to unpickle)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(save(state)))
    return path


def _rows(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """Quality rows and cost rows, one per model, as display strings."""
    task = get_task(report.get("task"))
    quality = [[e["name"], *task.report_row(e)] for e in report["models"]]
    costs = [[e["name"], e["model"], e["format"], f"{e['params']:,}", f"{e['weights_bytes'] / 1024:.0f}",
              mflops(e.get("flops")), f"{e['cpu']['latency_ms']:.2f}", f"{e['cpu']['throughput']:.0f}"]
             for e in report["models"]]
    return quality, costs


def summary_table(report: dict[str, Any]) -> Table:
    """Quality and cost side by side in one rich grid."""
    quality, costs = _rows(report)
    n = report["models"][0]["test_samples"]
    grid = Table.grid(padding=(0, 2))
    tables = []
    for title, header, rows in ((f"Quality, {report['dataset']} test set ({n} {_samples(report)})", _quality_header(report),
                                 quality),
                                (f"Cost (CPU: batch 1 latency, batch 256 throughput, {report['cpu_threads']} threads)",
                                 _cost_header(report), costs)):
        table = Table(title=title)
        for column in header:
            table.add_column(column, justify="left" if column in ("model", "arch") else "right")
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    for table in tables:
        grid.add_row(table)
    return grid


def markdown(report: dict[str, Any]) -> str:
    quality, costs = _rows(report)
    lines = [f"# Teacher vs student on {report['dataset']}", "",
             f"Test set: {report['models'][0]['test_samples']} {_samples(report)}, each counted once.", ""]
    for header, rows in ((_quality_header(report), quality), (_cost_header(report), costs)):
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines.append(f"CPU figures: median latency at batch 1 and throughput at batch 256, "
                 f"{report['cpu_threads']} threads.")
    base, task = report["models"][0], get_task(report.get("task"))
    kept = task.kept_text(base.get("ratios") or report["models"][-1]["ratios"])[0] if len(report["models"]) > 1 else ""
    lines += ["", f"Ratios against {base['name']}:", "",
              f"| model | params | FLOPs | CPU latency | CPU throughput | {kept} |", "|---|---|---|---|---|---|"]
    for e in report["models"][1:]:
        r = e["ratios"]
        lines.append(f"| {e['name']} | {r['params']:.3f} | {times(r['flops'], 3)} | {r['cpu_latency']:.2f} | "
                     f"{r['cpu_throughput']:.2f} | {task.kept_text(r)[1]} |")
    lines += ["", task.report_note(), ""]
    lines += [f"![{k}]({Path(v).name})" for k, v in report["figures"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m distill.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=DEFAULT_TEACHER,
                        help=f"teacher checkpoint or ONNX file (default {DEFAULT_TEACHER}), or the spec a student "
                             "was distilled from (torchvision:resnet18, import:pkg.mod:factory, ...), rebuilt with "
                             "the weights and adapters that student recorded")
    parser.add_argument("--student", nargs="+", default=DEFAULT_STUDENTS,
                        help="one or more student checkpoints, e.g. distilled and trained alone")
    parser.add_argument("--out_dir", default="reports", help="where the report goes (default reports/)")
    parser.add_argument("--data_root", default=None, help="dataset directory, if not where training found it")
    parser.add_argument("--batch_size", type=int, default=1000, help="test batch size")
    parser.add_argument("--latency_runs", type=int, default=30, help="timed repetitions per latency figure")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device for test logits")
    parser.add_argument("--teacher_tta", default=None, choices=list(TTA_VIEWS),
                        help="evaluate the teacher averaged over these test-time views, as a student stage's "
                             "--model.teacher_tta taught with it (default: none)")
    parser.add_argument("--export_safetensors", action="store_true",
                        help="also write each model's weights as OUT_DIR/<name>.safetensors (no pickle)")
    args = parser.parse_args(argv)

    def run() -> None:
        if args.batch_size < 1 or args.latency_runs < 1:
            raise UsageError("--batch_size and --latency_runs must be >= 1")
        check_output_dir(Path(args.out_dir), "--out_dir")
        evaluate(Path(args.teacher), [Path(p) for p in args.student], Path(args.out_dir), args.data_root,
                 args.batch_size, args.latency_runs, args.device, export_safetensors=args.export_safetensors,
                 teacher_tta=args.teacher_tta)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
