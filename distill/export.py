"""Deployable files from a trained network: ONNX fp32, verified against PyTorch, and int8 by static quantization.

Needs the ``compress`` extra (``pip install -e ".[compress]"``: onnx, onnxscript, onnxruntime);
a missing package is a one-line error naming the extra.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from distill import metrics
from distill.errors import UsageError
from distill.models.trees import fitted_trees_in
from distill.run_dir import atomic_write
from distill.runtime import BATCHES, INPUT, OUTPUT, SessionOptions, input_dtype, open_session, require
from distill.tasks import get_task

if TYPE_CHECKING:
    from distill.checkpoint import Trained

__all__ = ["INPUT", "OUTPUT", "OnnxClassifier", "convert_fp16", "description", "export_onnx", "file_bytes", "quantize_int8", "require", "verify_onnx"]


def description(trained: Trained, classes: Sequence[str], recipe: str, counted: dict[str, Any]) -> dict[str, Any]:
    """What the ``.json`` beside an exported file says, so that the file alone is used as its checkpoint
    would be: its classes, input shape, task and output, and the data settings and fitted preprocessing
    its rows need (``inference.load_artifact`` and an ONNX teacher read it).

    Args:
        trained: The checkpoint the file was exported from.
        classes: The data's class names.
        recipe: How the file was made (``onnx fp32``, ``onnx int8 (QDQ, per-channel)``, ...).
        counted: The source network's ``cost.cost`` (parameters and FLOPs).
    """
    task = get_task(trained.hparams.get("task"))
    return {"input_shape": list(trained.hparams["input_shape"]), "num_classes": trained.hparams["num_classes"],
            "task": task.name, "classes": list(classes), "model": trained.hparams["model"],
            "source": str(trained.path), "params": counted["params"], "flops": counted["flops"],
            "data_module": trained.data_module or "images", "data": trained.data_hparams, "output": task.output_kind,
            "format": recipe.split(" (")[0], "recipe": recipe}


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Writes ``model`` (eval mode) as one ONNX file with a dynamic batch axis, atomically.

    Exported with ``torch.onnx.export(dynamo=True)``; the weights are kept inside the file (no
    ``.onnx.data`` beside it), which ONNX allows up to 2 GB; the exporter's debugging notes on each
    node (Python stack traces) are left out.
    """
    trees = fitted_trees_in(model)
    if trees is not None:  # fitted outside torch: its own ONNX graph, given the network's output
        mean, std = (float(model.mean), float(model.std)) if model is not trees else (0.0, 1.0)  # type: ignore[arg-type]
        atomic_write(path, lambda f: f.write(trees.deployable_onnx(mean, std)))
        return path
    require("onnxscript")
    model.eval()  # (an exported graph's eval returns nothing)
    model = model.cpu()
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (example,), str(staged), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)
        if any(p.name != "model.onnx" for p in Path(tmp).iterdir()):
            raise UsageError("the ONNX export wrote external weight files; the model is too large for one file")
        graph = require("onnx").load(str(staged))
        for node in graph.graph.node:  # the exporter's stack traces: 60 % of a small int8 file, nothing to run
            del node.metadata_props[:]
            node.doc_string = ""
        atomic_write(path, lambda f: f.write(graph.SerializeToString()))
    return path


class OnnxClassifier:
    """An ONNX classifier run by onnxruntime on the CPU, called like a network: inputs (B, ...) -> logits (B, K).

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads of a session opened without ``sessions`` (default: PyTorch's count).
        sessions: The options to run it with at batch 1 (``latency``) and at larger batches
            (``throughput``), as ``distill.compress`` chose and recorded them in the sidecar.
    """

    def __init__(self, path: Path, threads: int | None = None,
                 sessions: dict[str, SessionOptions] | None = None) -> None:
        self.path = path
        default = SessionOptions(threads or torch.get_num_threads())
        self.options = {kind: (sessions or {}).get(kind, default) for kind in BATCHES}
        opened = {options: open_session(path, options) for options in set(self.options.values())}
        self.sessions = {kind: opened[options] for kind, options in self.options.items()}
        self.session = self.sessions["throughput"]
        self.threads = self.options["throughput"].intra_op_threads

    def session_for(self, batch: int) -> Any:
        """The session that runs a batch of ``batch`` fastest."""
        return self.sessions["latency" if batch == 1 else "throughput"]

    def __call__(self, inputs: Tensor) -> Tensor:
        session = self.session_for(len(inputs))
        array = inputs.detach().cpu().float().contiguous().numpy().astype(input_dtype(session), copy=False)
        return torch.from_numpy(session.run([OUTPUT], {INPUT: array})[0]).float()

    def eval(self) -> "OnnxClassifier":
        return self

    def to(self, *args: Any, **kwargs: Any) -> "OnnxClassifier":
        return self

    def cpu(self) -> "OnnxClassifier":
        return self


@torch.no_grad()
def verify_onnx(onnx_model: OnnxClassifier, model: nn.Module, inputs: Tensor, atol: float = 1e-4,
                rtol: float = 1e-5) -> dict[str, float]:
    """Compares the ONNX file's outputs with PyTorch's on ``inputs``: within ``atol + rtol * |output|``.

    The relative part is float32 rounding at the outputs' own scale: a regression predicting prices
    near 450,000 differs by about 0.03 from one float32 rounding to the next.

    Raises:
        UsageError: an output differs by more than that, or a top-1 prediction differs.
    """
    expected = model.eval().cpu()(inputs)
    got = onnx_model(inputs)
    max_diff = float((expected - got).abs().max())
    allowed = atol + rtol * float(expected.abs().max())
    agreement = metrics.agreement(expected, got)
    if max_diff > allowed or agreement < 1.0:
        raise UsageError(f"{onnx_model.path} does not match PyTorch: max output difference {max_diff:.2e} "
                         f"(allowed {allowed:.1e}), top-1 agreement {100 * agreement:.2f}%")
    return {"max_logit_diff": max_diff, "top1_agreement": agreement}


def quantize_int8(fp32_path: Path, out_path: Path, calibration: Iterator[Tensor]) -> Path:
    """Static int8 quantization by onnxruntime: QDQ format, per-channel int8 weights, uint8 activations.

    The graph is first prepared with ``quant_pre_process`` (shape inference, folding); activation
    ranges come from ``calibration`` batches (training inputs, never test ones). Weights use 7 of
    their 8 bits (``reduce_range``): on x86 CPUs without VNNI, uint8 x int8 products saturate the
    16-bit accumulators otherwise (onnxruntime's own advice). Measured on this project's cnn_wide
    teacher on such a CPU: 90.84% without it, 92.91% with it, against 93.00% in fp32.
    """
    quantization = require("onnxruntime.quantization")
    shape_inference = require("onnxruntime.quantization.shape_inference")

    class Reader(quantization.CalibrationDataReader):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            self.batches = ({INPUT: batch.cpu().float().numpy()} for batch in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        shape_inference.quant_pre_process(str(fp32_path), str(prepared))
        quantization.quantize_static(str(prepared), str(quantized), Reader(),
                                     quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                     weight_type=quantization.QuantType.QInt8,
                                     activation_type=quantization.QuantType.QUInt8, reduce_range=True)
        atomic_write(out_path, lambda f: f.write(quantized.read_bytes()))
    return out_path


def convert_fp16(fp32_path: Path, out_path: Path, keep_io_types: bool = True) -> Path:
    """The fp32 file with weights and arithmetic in float16 (onnxconverter-common), for GPU and NPU targets.

    ``keep_io_types``: inputs and outputs stay float32, cast at the graph's edges, so callers feed the
    same arrays as to the fp32 file; otherwise they are float16 too.
    """
    onnx = require("onnx")
    try:
        float16 = importlib.import_module("onnxconverter_common.float16")
    except ModuleNotFoundError:
        raise UsageError('fp16 ONNX needs onnxconverter-common: pip install -e ".[quantize]"') from None
    converted = float16.convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=keep_io_types)
    atomic_write(out_path, lambda f: f.write(converted.SerializeToString()))
    return out_path


def file_bytes(path: Path) -> int:
    """Bytes of a model file and of any external data file written beside it."""
    extra = path.with_name(path.name + ".data")
    return os.path.getsize(path) + (os.path.getsize(extra) if extra.exists() else 0)
