"""Command line: ``python -m distill.compress --ckpt STUDENT [PRUNED ...] [--teacher TEACHER] --out_dir DIR``.

Exports each network to ONNX (fp32, checked against PyTorch), quantizes it to int8 (onnxruntime,
static, calibrated on training images), measures every artifact side by side on the test set and
the CPU, and names the artifact to ship: the fastest at batch 1 within ``--max_drop`` points of
the first student in PyTorch (for a regression target: of R² × 100). Each network is named by its
run directory (``student``, ``pruned``). Writes the ``.onnx`` files, ``compress.json``,
``compress.md`` and ``compress.png`` (accuracy against latency), all at once when everything succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from distill import cost, metrics
from distill.checkpoint import Trained, load_trained, rebuild_data
from distill.errors import OneLineParser, UsageError, exit_code
from distill.evaluate import check_same_task, name_models, reading_rows
from distill.export import (OnnxClassifier, convert_fp16, description, export_onnx, file_bytes, quantize_int8,
                           verify_onnx)
from distill.models.quantized import quantized_graph
from distill.models.trees import LIBRARIES, fitted_trees_in
from distill.runtime import (BATCHES, BestOf, array_round, empty_graph_round, interleaved, onnx_round, open_session,
                             session_choices, thread_choices, torch_round)
from distill.inference import test_outputs
from distill.models import create_model, list_models
from distill.models.teacher_view import recorded_normalization, same_normalization
from distill.run_dir import atomic_write_text, check_output_dir
from distill.tasks import Task, get_task


def calibration_batches(data: Any, images: int, batch_size: int = 128) -> list[torch.Tensor]:
    """The first ``images`` training inputs, model-ready, in batches (never test images)."""
    taken, batches = 0, []
    for inputs, _ in data.training_inputs():
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + min(batch_size, images - taken)]
            batches.append(chunk.cpu())
            taken += len(chunk)
            if taken >= images:
                return batches
    return batches


PRECISIONS = ("int8", "fp16")  # what --precision adds to every network's ONNX fp32 file
QAD_FORMAT, FP16_FORMAT = "onnx int8 (QDQ, quantization-aware)", "onnx fp16"
# Top-1 agreement on the test set a file must keep with the network it comes from, where rounding may move it:
# integer kernels round otherwise than fake quantization; float16 keeps 11 bits of every value.
MIN_AGREEMENT = {QAD_FORMAT: 0.995, FP16_FORMAT: 0.999}

TIED = 0.05  # latencies this close to the fastest count as the same speed when recommending
ROUNDS = 7  # interleaved timing rounds per artifact: the median of their per-call means is reported


@dataclass
class Artifact:
    """One deployable form of one network (PyTorch, ONNX fp32, int8 or fp16), before it is measured."""

    name: str
    format: str
    runtime: str
    runner: Any = field(repr=False)  # what runs it: the network, or an onnxruntime session
    file: str | None
    bytes: int
    source: dict[str, Any]  # role, architecture, checkpoint, parameters and FLOPs of the network it comes from
    ways: dict[str, BestOf] = field(repr=False)  # per figure (latency: batch 1, throughput: 256), the ways to run it
    options: dict[Any, dict[str, Any]]  # each way's settings as plain values (threads, graph optimization)
    sidecar: dict[str, Any] | None = None  # what the ``.json`` beside its file holds, before the options chosen
    parity: dict[str, float] | None = None  # ONNX against PyTorch on test inputs

    def row(self) -> dict[str, Any]:
        """Its plain row, to which measurement and comparison add their figures."""
        row = {**self.source, "name": self.name, "format": self.format, "runtime": self.runtime, "file": self.file,
               "bytes": self.bytes}
        return {**row, "parity": self.parity} if self.parity is not None else row

    def runs_with(self) -> dict[str, dict[str, Any]]:
        """Per figure, the way that was fastest in most timing rounds."""
        return {kind: self.options[best.winner] for kind, best in self.ways.items()}


OVERHEAD = "onnxruntime per call"  # an empty graph timed with the artifacts: the floor under their latencies


def measure_speed(artifacts: list[Artifact], calls: int, input_shape: tuple[int, ...],
                  repeats: int = ROUNDS) -> tuple[dict[str, dict[str, float]], float]:
    """Batch-1 latency and batch-256 throughput of every artifact, each at its best way to run in every round:
    interleaved rounds of plain calls (medians); and onnxruntime's own cost per call (ms), timed alike."""
    latency = interleaved({**{a.name: a.ways["latency"] for a in artifacts},
                           OVERHEAD: empty_graph_round(input_shape)}, calls, repeats)
    batch = BATCHES["throughput"]
    per_batch = interleaved({a.name: a.ways["throughput"] for a in artifacts}, max(3, calls // 30), repeats)
    speeds = {a.name: {"latency_ms": 1000 * latency[a.name], "throughput": batch / per_batch[a.name]}
              for a in artifacts}
    return speeds, 1000 * latency[OVERHEAD]


def artifacts_of(role: str, trained: Trained, work: Path, data: Any, calibration: list[torch.Tensor],
                 check_inputs: torch.Tensor, precisions: tuple[str, ...] = ("int8",),
                 fp16_io: bool = False, first: Path | None = None) -> list[Artifact]:
    """The network in PyTorch and its ONNX files (fp32 and ``precisions``; a quantization-aware network's
    int8 file), written and checked, each with the ways worth trying to run it, before measurement.

    ``calibration`` and ``check_inputs`` are rows of ``data``; a table network fitted otherwise (than
    ``first``'s data) is calibrated and checked on the same rows as its own preprocessing writes them.
    """
    input_shape = tuple(trained.hparams["input_shape"])
    network = trained.network.eval().cpu()
    view = reading_rows(network, trained, data, first or trained.path)
    if view is not network:  # (B, F_data) -> (B, F_own)
        with torch.no_grad():
            check_inputs, calibration = view.own_rows(check_inputs), [view.own_rows(b) for b in calibration]
    trees = fitted_trees_in(network)
    files: list[tuple[Path, str, str, dict[str, float] | None]] = []  # path, format, name, parity
    if trained.hparams.get("quantization"):  # trained int8-aware: its own int8 file, nothing to calibrate
        int8_path = export_onnx(quantized_graph(network), input_shape, work / f"{role}.int8.onnx")
        files.append((int8_path, QAD_FORMAT, "ONNX int8", None))  # checked on the whole test set (check_agreement)
    else:
        onnx_path = export_onnx(network, input_shape, work / f"{role}.onnx")
        files.append((onnx_path, "onnx fp32", "ONNX fp32", verify_onnx(OnnxClassifier(onnx_path), network, check_inputs)))
        if trees is not None:  # its thresholds are compared, not multiplied: nothing for int8 or fp16 to speed up
            precisions = ()
        if "int8" in precisions:
            int8_path = quantize_int8(onnx_path, work / f"{role}.int8.onnx", iter(calibration))
            files.append((int8_path, "onnx int8 (QDQ, per-channel)", "ONNX int8", None))
        if "fp16" in precisions:  # checked on the whole test set (check_agreement)
            fp16_path = convert_fp16(onnx_path, work / f"{role}.fp16.onnx", keep_io_types=not fp16_io)
            files.append((fp16_path, FP16_FORMAT + (", fp16 inputs" if fp16_io else ""), "ONNX fp16", None))
    base = {"role": role, "model": trained.hparams["model"], "checkpoint": str(trained.path),
            **cost.cost(network, input_shape)}
    inputs = {kind: torch.randn(batch, *input_shape) for kind, batch in BATCHES.items()}
    threads = {t: {"intra_op_threads": t} for t in thread_choices()}
    if trees is not None:  # the library's own prediction stands where a network's PyTorch forward does
        artifacts = [Artifact(f"{role} ({trees.library})", f"{trees.library} native", trees.library, network,
                              None, len(trees.native_bytes()), base,
                              {k: BestOf({t: array_round(trees.native_predictor(t), inputs[k].numpy()) for t in threads})
                               for k in BATCHES}, threads)]
    else:
        kind = "pytorch int8 fake-quant" if trained.hparams.get("quantization") else "pytorch fp32"
        artifacts = [Artifact(f"{role} (PyTorch)", kind, "torch eager", network, None, cost.weights_bytes(network),
                              base, {k: BestOf({t: torch_round(network, inputs[k], t) for t in threads})
                                     for k in BATCHES}, threads)]
    for path, fmt, name, check in files:
        sessions = {options: open_session(path, options) for options in session_choices()}
        ways = {k: BestOf({o: onnx_round(session, inputs[k].numpy()) for o, session in sessions.items()})
                for k in BATCHES}
        artifacts.append(Artifact(f"{role} ({name})", fmt, "onnxruntime CPU", OnnxClassifier(path), path.name,
                                  file_bytes(path), base, ways, {o: o.as_dict() for o in sessions},
                                  description(trained, data.class_names, fmt, base), check))
    return artifacts


WORK_PREFIX, OWNER = ".compress-", "owner.pid"  # the work folder beside --out_dir, and who is writing it


def remove_stale_work(parent: Path) -> list[Path]:
    """Removes work folders of earlier runs that were killed (their writer is gone); returns them.

    A run cleans its own folder on every exit it sees (errors, Ctrl-C, SIGTERM); SIGKILL leaves it,
    and the next run in the same place removes it. A folder whose writer still runs is left alone.
    """
    removed = []
    for work in parent.glob(f"{WORK_PREFIX}*"):
        try:
            pid = int((work / OWNER).read_text())
            os.kill(pid, 0)  # raises if no such process
            if pid != os.getpid():
                continue
        except (OSError, ValueError):
            pass
        shutil.rmtree(work, ignore_errors=True)
        removed.append(work)
    return removed


def check_same_normalization(sources: dict[str, Trained], normalization: Any) -> None:
    """Every artifact is measured on one test set: networks trained on images normalized otherwise are refused
    (their exported files expect their own normalization)."""
    for role, trained in sources.items():
        own = recorded_normalization(trained.data_hparams)
        if normalization is not None and own is not None and not same_normalization(own, normalization):
            raise UsageError(f"{trained.path} ({role}) was trained on images normalized with mean {own[0]}, std "
                             f"{own[1]}, the test data with {list(normalization[0])}, {list(normalization[1])}: "
                             "compress networks of the same data one call each")


def compress(students: list[Path], teacher: Path | None, out_dir: Path, data_root: str | None = None,
             max_drop: float = 0.3, calibration_images: int = 512, latency_runs: int = 300,
             precisions: tuple[str, ...] = ("int8",), fp16_io: bool = False,
             console: Console | None = None) -> dict[str, Any]:
    """Builds, measures and reports every artifact; returns what ``compress.json`` holds.

    Every network is written as ONNX fp32, and as each of ``precisions`` (``int8``: post-training
    static quantization; ``fp16``); a network trained int8-aware (the qat stage) as its own int8 file.
    """
    # piped to a file, a console is 80 columns and the table's cells would be cut to nothing
    console = console or Console(width=None if sys.stdout.isatty() else 220)
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        raise UsageError(f"--precision {unknown[0]}: choose from {', '.join(PRECISIONS)}")
    if max_drop < 0:
        raise UsageError(f"--max_drop must be >= 0 points, got {max_drop}")
    # The role "teacher" is --teacher's: a --ckpt from a run directory of that name is told apart.
    names = [f"{name}-ckpt" if name == "teacher" else name for name in name_models(students)]
    sources = {name: load_trained(path) for name, path in zip(names, students)}
    reference = names[0]  # the student the accuracy budget is counted from
    if teacher is not None:
        sources = {"teacher": load_trained(teacher), **sources}
    check_same_task(list(sources.values()))
    data = rebuild_data(sources[reference], data_root, 1000)
    check_same_normalization(sources, getattr(data, "normalization", None))
    calibration = calibration_batches(data, calibration_images)
    check_inputs = next(iter(data.test_batches()))[0][:256].cpu()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work(out_dir.parent)
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=out_dir.parent))
    (work / OWNER).write_text(f"{os.getpid()}\n")
    try:
        artifacts: list[Artifact] = []
        for role, trained in sources.items():
            console.print(f"{role}: exporting and checking its files")
            artifacts += artifacts_of(role, trained, work, data, calibration, check_inputs, precisions, fp16_io,
                                      sources[reference].path)
        input_shape = tuple(sources[reference].hparams["input_shape"])
        console.print(f"timing {len(artifacts)} artifacts, every way to run each, {ROUNDS} interleaved rounds of "
                      f"{latency_runs} calls (--latency_runs)")
        speeds, overhead_ms = measure_speed(artifacts, latency_runs, input_shape)
        logits_of: dict[str, torch.Tensor] = {}
        task = get_task(sources[reference].hparams.get("task"))
        rows = [a.row() for a in artifacts]
        for row, artifact in zip(rows, artifacts):
            # every artifact scores the same test rows, each as its own preprocessing writes them
            runner = reading_rows(artifact.runner, sources[row["role"]], data, sources[reference].path)
            logits, labels = test_outputs(runner, data, "cpu")
            logits_of[row["name"]] = logits
            quality = task.quality(logits, labels)
            row.update({figure: quality[figure] for figure in task.figures})
            row.update(test_samples=len(labels), runs_with=artifact.runs_with(), **speeds[row["name"]])
            if artifact.sidecar is not None:  # the file runs as it was timed: predict and evaluate read this
                atomic_write_text(work / Path(artifact.file).with_suffix(".json").name,
                                  json.dumps({**artifact.sidecar, "session": row["runs_with"]}, indent=2) + "\n")
        check_agreement(rows, logits_of, task)
        report = summarize(rows, logits_of, max_drop, reference, task)
        recommended = next(r for r in rows if r["name"] == report["recommended"])
        where = (f"where the time goes: {overhead_ms:.3f} ms of every ONNX call at batch 1 is onnxruntime's own "
                 f"(an empty graph called alike), {recommended['latency_ms'] - overhead_ms:.3f} ms of "
                 f"{recommended['name']}'s {recommended['latency_ms']:.3f} ms is its network")
        report["verdict"] = "\n".join([report["verdict"], *pruning_statements(sources, rows),
                                       *([where] if recommended["file"] else [])])
        report.update(cpu_threads=torch.get_num_threads(), rounds=ROUNDS, calls_per_round=latency_runs,
                      onnxruntime_call_ms=overhead_ms,
                      max_drop_points=max_drop, input_shape=list(input_shape),
                      calibration_images=sum(len(b) for b in calibration))
        atomic_write_text(work / "compress.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(work / "compress.md", markdown(report))
        plot(report, work / "compress.png")
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(work.iterdir()):
            if path.name != OWNER:
                os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(table(report))
    console.print(report["verdict"])
    return report


def source_name(rows: list[dict[str, Any]], role: str) -> str:
    """The artifact a role's others are compared with: its network as trained (PyTorch; a tree ensemble's own
    library), the first of its rows."""
    return next((r["name"] for r in rows if r["role"] == role), f"{role} (PyTorch)")


def trees_teacher(rows: list[dict[str, Any]]) -> bool:
    """Whether the teacher is a tree ensemble (timed in its library and as its ONNX file)."""
    return any(r["role"] == "teacher" and r["model"] in LIBRARIES for r in rows)


def check_agreement(rows: list[dict[str, Any]], logits_of: dict[str, torch.Tensor], task: Task) -> None:
    """Files that round otherwise than their network (a quantization-aware int8 file, an fp16 file) must
    still predict what the network predicted, test input by test input (``MIN_AGREEMENT``).

    Raises:
        UsageError: a file below its agreement, naming it and the likely cause.
    """
    for row in rows:
        kind = next((k for k in MIN_AGREEMENT if row["format"].startswith(k)), None)
        if kind is None or not task.has_classes:
            continue
        network = logits_of[source_name(rows, row["role"])]
        agreement = metrics.agreement(logits_of[row["name"]], network)
        row["parity"] = {"top1_agreement": agreement}
        if agreement < MIN_AGREEMENT[kind]:
            cause = ("on an x86 CPU without VNNI train with --model.reduce_range true" if kind == QAD_FORMAT else
                     "its values overflow or underflow float16; keep this network in fp32")
            raise UsageError(f"{row['file']} predicts otherwise than {row['role']} in PyTorch on "
                             f"{100 * (1 - agreement):.2f}% of the test set (at most "
                             f"{100 * (1 - MIN_AGREEMENT[kind]):.1f}% allowed): {cause}")


def summarize(rows: list[dict[str, Any]], logits_of: dict[str, torch.Tensor], max_drop: float,
              reference: str, task: Task) -> dict[str, Any]:
    """Ratios, agreements, the recommended artifact and plain statements about what paid off.

    Artifacts are held to the task's headline figure (accuracy; a regression's R²); points are 100 times it.
    """
    figure = task.headline
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        source = by_name[source_name(rows, row["role"])]
        onnx = by_name.get(f"{row['role']} (ONNX fp32)")  # none for a network trained int8-aware
        row["size_ratio"] = row["bytes"] / source["bytes"]
        row[f"{figure}_change_points"] = 100 * (row[figure] - source[figure])
        key, value = task.closeness(logits_of[row["name"]], logits_of[source["name"]])
        row[f"{key}_fp32"] = value  # against the same network in PyTorch
        row["speedup_vs_pytorch"] = source["latency_ms"] / row["latency_ms"]
        row["speedup_vs_onnx_fp32"] = None if onnx is None else onnx["latency_ms"] / row["latency_ms"]
    student = by_name[source_name(rows, reference)]
    budget = student[figure] - max_drop / 100
    candidates = [r for r in rows if r["role"] != "teacher" and r[figure] >= budget - 1e-12]
    fastest = min(r["latency_ms"] for r in candidates)
    # Latencies within TIED of the fastest are one speed (rounds of the same file differ by that much):
    # among them the most accurate, then the first in the table (fp32 before the roundings of it).
    tied = [r for r in candidates if r["latency_ms"] <= fastest * (1 + TIED)]
    recommended = max(tied, key=lambda r: (r[figure], -rows.index(r)))
    statements = [f"recommended: {recommended['name']} ({recommended['file'] or 'the checkpoint'}): the fastest "
                  f"student artifact at batch 1 (within {100 * TIED:.0f}%, then the most accurate) within "
                  f"{max_drop} points of {student['name']} "
                  f"({task.headline_label} {task.shown(recommended[figure])} against "
                  f"{task.shown(student[figure])})"]
    for role in dict.fromkeys(r["role"] for r in rows):
        int8, fp16 = by_name.get(f"{role} (ONNX int8)"), by_name.get(f"{role} (ONNX fp16)")
        fp32 = by_name.get(f"{role} (ONNX fp32)")
        if fp32 is not None and int8 is not None and int8["latency_ms"] > fp32["latency_ms"] * (1 + TIED):
            statements.append(f"{role}: int8 is slower than fp32 at batch 1 ({int8['latency_ms']:.3f} against "
                              f"{fp32['latency_ms']:.3f} ms): too small a network for quantized kernels to pay")
        slower = [f"{fp16[key]:.3f} against {fp32[key]:.3f} ms at batch 1" if key == "latency_ms" else
                  f"{fp16[key]:.0f} against {fp32[key]:.0f} inputs/s at batch {BATCHES['throughput']}"
                  for key, worse in (("latency_ms", lambda a, b: a > b * (1 + TIED)),
                                     ("throughput", lambda a, b: a * (1 + TIED) < b))
                  if fp32 is not None and fp16 is not None and worse(fp16[key], fp32[key])]
        if slower:
            statements.append(f"{role}: fp16 is slower than fp32 on this CPU ({'; '.join(slower)}): the fp16 file is "
                              "for GPUs and NPUs with float16 arithmetic, not for this machine")
    teacher = by_name.get(source_name(rows, "teacher"))
    headline = None
    if teacher is not None:
        headline = {"params_ratio": teacher["params"] / recommended["params"],
                    "latency_ratio": teacher["latency_ms"] / recommended["latency_ms"],
                    "throughput_ratio": recommended["throughput"] / teacher["throughput"],
                    f"{figure}_drop_points": 100 * (teacher[figure] - recommended[figure])}
        threads = {name: "/".join(str(r["runs_with"][k]["intra_op_threads"]) for k in BATCHES)
                   for name, r in (("teacher", teacher), ("recommended", recommended))}
        statements.append(f"against the teacher {teacher['name'].split('(')[-1].rstrip(')')}: "
                          f"{headline['params_ratio']:.0f}x fewer parameters, "
                          f"{headline['latency_ratio']:.1f}x lower batch-1 latency ({teacher['latency_ms']:.3f} "
                          f"against {recommended['latency_ms']:.3f} ms), {headline['throughput_ratio']:.1f}x its "
                          f"batch-256 throughput (threads at batch 1/256: teacher {threads['teacher']}, "
                          f"{recommended['name']} {threads['recommended']}), "
                          f"{given_up(headline[f'{figure}_drop_points'], task.headline_label)}")
        teacher_onnx = by_name.get("teacher (ONNX fp32)")
        if teacher_onnx is not None and trees_teacher(rows):  # trees deploy as ONNX too: held to that file as well
            headline["onnx_latency_ratio"] = teacher_onnx["latency_ms"] / recommended["latency_ms"]
            headline["onnx_throughput_ratio"] = recommended["throughput"] / teacher_onnx["throughput"]
            statements.append(f"against the teacher's own ONNX file: {headline['onnx_latency_ratio']:.1f}x lower "
                              f"batch-1 latency ({teacher_onnx['latency_ms']:.3f} against {recommended['latency_ms']:.3f}"
                              f" ms), {headline['onnx_throughput_ratio']:.1f}x its batch-256 throughput")
    return {"artifacts": rows, "recommended": recommended["name"], "headline": headline, "figure": figure,
            "task": task.name,
            "verdict": "\n".join(statements)}


NOISE_POINTS = 0.5  # what a thread count alone moves one run by (README): a smaller difference is not a gain


def given_up(points: float, label: str) -> str:
    """The teacher's lead over the recommended artifact in words: given up, or gained where it is ahead."""
    return f"{points:.2f} points of {label} given up" if points >= 0 else f"{-points:.2f} points of {label} gained"


def registry_twin(trained: Trained) -> str | None:
    """The registry architecture whose freshly built layers have exactly this network's shapes, if any."""
    hp = trained.hparams
    shapes = {k: tuple(v.shape) for k, v in trained.network.state_dict().items()}
    for name in list_models():
        try:
            candidate = create_model(name, num_classes=hp["num_classes"], in_channels=hp["input_shape"][0])
        except Exception:  # noqa: BLE001 (an architecture that cannot take this task is simply not a match)
            continue
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            return name
    return None


def pruning_statements(sources: dict[str, Trained], rows: list[dict[str, Any]]) -> list[str]:
    """For each pruned network whose shape is a registry model's: whether pruning beat distilling that model from scratch."""
    figure = get_task(next(iter(sources.values())).hparams.get("task")).headline
    accuracy = {r["role"]: r[figure] for r in rows if r["format"] == "pytorch fp32"}
    statements = []
    for role, trained in sources.items():
        if "pruning_ratio" not in trained.hparams:
            continue
        twin = registry_twin(trained)
        if twin is None:
            continue
        scratch = next((r for r, t in sources.items() if r != role and t.hparams.get("model") == twin
                        and "pruning_ratio" not in t.hparams and r != "teacher"), None)
        if scratch is None:
            statements.append(f"{role}: its layers are exactly {twin}'s; distill {twin} from scratch "
                              f"(python -m distill.train student --model.model {twin}) and pass it with --ckpt to "
                              "see whether pruning adds anything")
            continue
        gain = 100 * (accuracy[role] - accuracy[scratch])
        verdict = ("pruning adds nothing here (inside the half point a thread count alone moves a run)"
                   if abs(gain) < NOISE_POINTS else ("pruning pays" if gain > 0 else "training from scratch is better"))
        statements.append(f"{role}: {gain:+.2f} points against {twin} distilled from scratch ({scratch}): {verdict}")
    return statements


def columns(report: dict[str, Any]) -> list[str]:
    task = get_task(report.get("task"))
    return ["artifact", "format", "params", "MFLOPs", "size KB", "size ×", *task.artifact_columns, "ms (b=1)",
            f"{_samples(report)}/s (b=256)", "threads", "× PyTorch", "× ONNX fp32"]


def _cells(row: dict[str, Any], task: Task) -> list[str]:
    return [row["name"], row["format"], f"{row['params']:,}", "n/a" if row.get("flops") is None else f"{row['flops'] / 1e6:.2f}", f"{row['bytes'] / 1024:.0f}",
            f"{row['size_ratio']:.2f}", *task.artifact_cells(row), f"{row['latency_ms']:.3f}", f"{row['throughput']:.0f}",
            "/".join(str(row["runs_with"][kind]["intra_op_threads"]) for kind in BATCHES), f"{row['speedup_vs_pytorch']:.2f}",
            "–" if row["speedup_vs_onnx_fp32"] is None else f"{row['speedup_vs_onnx_fp32']:.2f}"]


def _samples(report: dict[str, Any]) -> str:
    return get_task(report.get("task")).samples(len(report.get("input_shape", [0, 0])))


def table(report: dict[str, Any]) -> Table:
    rows = report["artifacts"]
    out = Table(title=f"Artifacts on the test set ({rows[0]['test_samples']} {_samples(report)}), CPU, "
                      f"{report['cpu_threads']} threads available; threads: each artifact's at batch 1/256")
    for column in columns(report):
        out.add_column(column, justify="left" if column in ("artifact", "format") else "right")
    for row in rows:
        out.add_row(*_cells(row, get_task(report.get("task"))), style="bold" if row["name"] == report["recommended"] else None)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Compression report", "",
             f"Test set: {report['artifacts'][0]['test_samples']} {_samples(report)}. CPU, {report['cpu_threads']} threads "
             "available; each artifact runs with the thread count (onnxruntime: and graph optimization) that serves it "
             "best at each batch size, chosen by timing and recorded in its sidecar (threads: batch 1/256). Latency: "
             f"the median over {report['rounds']} interleaved rounds of {report['calls_per_round']} plain calls each "
             f"(a prepared input, nothing else timed); int8 calibrated on {report['calibration_images']} training "
             f"{_samples(report)}.", "",
             "| " + " | ".join(columns(report)) + " |", "|" + "---|" * len(columns(report))]
    task = get_task(report.get("task"))
    lines += ["| " + " | ".join(_cells(row, task)) + " |" for row in report["artifacts"]]
    lines += ["", task.artifact_note, ""]
    lines += [f"- {line}" for line in report["verdict"].splitlines()]
    return "\n".join(lines) + "\n\n![accuracy against latency](compress.png)\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    task = get_task(report.get("task"))
    for row in report["artifacts"]:
        marker = "*" if row["name"] == report["recommended"] else "o"
        y = task.plot_scale * row[task.headline]
        axis.scatter(row["latency_ms"], y, marker=marker, s=120 if marker == "*" else 40)
        axis.annotate(row["name"], (row["latency_ms"], y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("batch-1 latency on the CPU (ms, log scale)")
    axis.set_ylabel(f"test {task.headline_label}{' (%)' if task.plot_scale == 100 else ''}")
    axis.set_title(f"Artifacts: {task.headline_label} against latency (* recommended)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m distill.compress", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", default=["checkpoints/student/best.ckpt"],
                        help="the student checkpoint(s) to compress, e.g. the distilled one and its pruned version; "
                             "the first is the reference of --max_drop")
    parser.add_argument("--teacher", default=None, help="also export and measure this teacher checkpoint")
    parser.add_argument("--out_dir", default="compressed", help="where the artifacts and the report go")
    parser.add_argument("--data_root", default=None, help="dataset directory, if not where training found it")
    parser.add_argument("--max_drop", type=float, default=0.3,
                        help="accuracy budget in points below the student in PyTorch for the recommended artifact "
                             "(regression: points of R² x 100)")
    parser.add_argument("--calibration", type=int, default=512,
                        help="training images (or table rows) calibrating int8 activations")
    parser.add_argument("--latency_runs", type=int, default=300,
                        help=f"timed batch-1 calls per artifact in each of {ROUNDS} interleaved rounds")
    parser.add_argument("--precision", nargs="+", default=["int8"], metavar="{int8,fp16}",
                        help="besides ONNX fp32, write each network as post-training int8 and/or fp16 "
                             "(GPU and NPU targets; checked: >= 99.9%% top-1 agreement)")
    parser.add_argument("--fp16_io", action="store_true",
                        help="fp16 files take and return float16 (default: float32 at the edges, cast inside)")
    args = parser.parse_args(argv)

    def run() -> None:
        if args.calibration < 1:
            raise UsageError(f"--calibration must be >= 1, got {args.calibration}")
        if args.latency_runs < 3:
            raise UsageError(f"--latency_runs must be >= 3, got {args.latency_runs}")
        check_output_dir(Path(args.out_dir), "--out_dir")
        compress([Path(p) for p in args.ckpt], None if args.teacher is None else Path(args.teacher),
                 Path(args.out_dir), args.data_root, args.max_drop, args.calibration, args.latency_runs,
                 tuple(args.precision), args.fp16_io)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
