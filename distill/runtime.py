"""How a deployed network is run and timed: onnxruntime session options chosen per file and batch size.

A tiny network at batch 1 runs in tens of microseconds, where a second thread's synchronization, a
tensor conversion or a timer per call are as large as the work: the defaults (every core, a timer
around each call) hid a student's speed and recommended its slower file. Here every artifact is
timed the way a deployment calls it (a prepared input, one ``session.run`` or forward per call, the
mean over a round of calls), rounds interleaved across artifacts so that the machine's drift falls on
all of them alike, and in every round each artifact runs every way worth trying on this CPU (thread
counts, graph optimization levels) with the fastest counted (``BestOf``); the way that won most
rounds is recorded, so ``distill.predict`` runs the file as it was measured.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.errors import UsageError

INPUT, OUTPUT = "input", "logits"  # the names of an exported graph's input and output
OPTIMIZATIONS = ("basic", "extended", "all")
BATCHES = {"latency": 1, "throughput": 256}  # what each figure is measured at


@dataclass(frozen=True)
class SessionOptions:
    """What an onnxruntime session on the CPU is opened with (plain values: they go into the sidecar)."""

    intra_op_threads: int = 1
    optimization: str = "all"  # onnxruntime's graph optimization level

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1 or self.optimization not in OPTIMIZATIONS:
            raise UsageError(f"session options {asdict(self)}: threads >= 1, optimization one of {OPTIMIZATIONS}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SessionOptions":
        try:
            return cls(int(values["intra_op_threads"]), str(values.get("optimization", "all")))
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"session options {values!r}: give intra_op_threads and optimization") from None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def require(module: str) -> Any:
    """Imports an optional dependency of the compression stage, or says which extra provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise UsageError(f"{module} is not installed; install the compression extra: pip install -e \".[compress]\"") from None


# Node attributes holding a graph's numbers outside its initializers: tree ensembles' split thresholds and leaf
# values, linear models' coefficients (ONNX-ML operators)
ATTRIBUTE_VALUES = ("nodes_values", "target_weights", "class_weights", "coefficients", "intercepts")


def graph_values(model_bytes: bytes) -> int:
    """Numbers an ONNX graph holds: its floating-point weight tensors' elements and its ONNX-ML operators'
    stored values. Scalars (an epsilon, a target's mean and scale) and integer tensors (shapes, axes) are
    the operators' constants, not weights: counted, one graph would say more than its checkpoint."""
    onnx = require("onnx")
    graph = onnx.load_from_string(model_bytes).graph
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    return sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) and t.data_type in floats) + sum(
        len(a.floats) for node in graph.node for a in node.attribute if a.name in ATTRIBUTE_VALUES)


def open_session(path: Path, options: SessionOptions) -> Any:
    """An onnxruntime CPU session: sequential execution, one inter-op thread, ``options``' threads and level."""
    ort = require("onnxruntime")
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = options.intra_op_threads
    settings.inter_op_num_threads = 1
    settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    settings.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[options.optimization]
    return ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])


def input_dtype(session: Any) -> type:
    """The numpy type a session's input takes (float16 for an fp16 file whose inputs were converted too)."""
    return np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32


Round = Callable[[int], float]  # runs n calls, returns the mean seconds per call


def onnx_round(session: Any, inputs: np.ndarray) -> Round:
    """Calls of ``session`` on one prepared input, as a deployment makes them."""
    feed = {INPUT: np.ascontiguousarray(inputs, dtype=input_dtype(session))}

    def run(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            session.run([OUTPUT], feed)
        return (time.perf_counter() - start) / calls
    return run


def empty_graph_round(input_shape: Sequence[int]) -> Round:
    """Calls of an ONNX graph that only returns its input, on one thread: onnxruntime's own cost per call
    (binding, checks, the copy out), the floor under any file's batch-1 latency."""
    onnx = require("onnx")
    helper = onnx.helper
    shape = ["batch", *input_shape]
    graph = helper.make_graph([helper.make_node("Identity", [INPUT], [OUTPUT])], "empty",
                              [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime this project supports
    ort = require("onnxruntime")
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = settings.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), settings, providers=["CPUExecutionProvider"])
    return onnx_round(session, np.zeros((1, *input_shape), dtype=np.float32))


def torch_round(model: nn.Module, inputs: torch.Tensor, threads: int) -> Round:
    """Forwards of ``model`` under ``torch.inference_mode`` with ``threads`` intra-op threads (restored after)."""
    def run(calls: int) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                model(inputs)  # the first call after a thread change pays for the pool
                start = time.perf_counter()
                for _ in range(calls):
                    model(inputs)
                return (time.perf_counter() - start) / calls
        finally:
            torch.set_num_threads(before)
    return run


def array_round(predict: Callable[[np.ndarray], Any], rows: np.ndarray) -> Round:
    """Calls of a library's own ``predict`` on a prepared array (a tree ensemble's native prediction)."""
    def run(calls: int) -> float:
        predict(rows)
        start = time.perf_counter()
        for _ in range(calls):
            predict(rows)
        return (time.perf_counter() - start) / calls
    return run


class BestOf:
    """Several ways to run one artifact (thread counts, session options), timed as one: each round runs every
    way and counts the fastest, so the figure is the artifact at its best on this CPU, whichever way the
    machine favours in that round, and the way that won most rounds is the one to deploy with.

    Args:
        ways: Label -> its timed calls.
    """

    def __init__(self, ways: dict[Any, Round]) -> None:
        self.ways = ways
        self.wins: Counter[Any] = Counter()

    def warm(self, calls: int) -> None:
        for run in self.ways.values():
            run(calls)

    def __call__(self, calls: int) -> float:
        times = {way: run(calls) for way, run in self.ways.items()}
        best = min(times, key=times.__getitem__)
        self.wins[best] += 1
        return times[best]

    @property
    def winner(self) -> Any:
        """The way that was fastest in most rounds (the first listed among equals)."""
        most = max(self.wins.values())
        return next(way for way in self.ways if self.wins[way] == most)


def interleaved(rounds: dict[str, Round | BestOf], calls: int, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median over ``repeats`` interleaved rounds of each one's mean seconds per call."""
    for run in rounds.values():
        run.warm(warmup) if isinstance(run, BestOf) else run(warmup)
    times: dict[str, list[float]] = {name: [] for name in rounds}
    for _ in range(repeats):
        for name, run in rounds.items():
            times[name].append(run(calls))
    return {name: statistics.median(values) for name, values in times.items()}


def thread_choices(cores: int | None = None) -> list[int]:
    """Thread counts worth trying: one, and every core this process may use (if more)."""
    cores = cores or torch.get_num_threads()
    return sorted({1, cores})


def session_choices() -> list[SessionOptions]:
    """The onnxruntime options worth trying on this CPU: each thread count, extended or all graph optimizations."""
    return [SessionOptions(t, level) for t in thread_choices() for level in ("extended", "all")]
