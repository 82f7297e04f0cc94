"""A teacher from any framework: its ONNX export run by onnxruntime (scikit-learn, LightGBM, XGBoost, TensorFlow, ...).

Loading an ONNX file runs no Python code, so it needs no trust flag. Which input the data feeds and
which output holds the scores are found (the only one; an output named like ``probabilities``) or
chosen by flags; a probability output becomes log-probabilities, the logits the distillation losses
expect (``softmax(log p / T)`` is ``p`` sharpened or softened by ``T``, as with logits). The
scikit-learn/onnxmltools "ZipMap" output, a list of ``{class: probability}`` per row, is read by
class name against the data's classes, so another order of classes cannot pass unnoticed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import UsageError
from distill.runtime import graph_values, require

SCORES = ("auto", "logits", "probabilities")
NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


class OnnxTeacher(nn.Module):
    """An ONNX model as a frozen teacher: inputs (B, ...) -> scores (B, K) the losses read as logits.

    Args:
        path: The ``.onnx`` file.
        input_name: The graph input the data feeds (None: its only input).
        output: The output holding the scores, by name or index (None: the only output, else the one
            named like ``prob``).
        scores: What the output holds: ``logits``, ``probabilities`` (turned into log-probabilities)
            or ``auto`` (probabilities when the output's name says so, or it is a ZipMap).
        threads: onnxruntime intra-op threads.

    Raises:
        UsageError: an unreadable file, an input or output that does not exist or cannot be chosen.
    """

    def __init__(self, path: str | Path, input_name: str | None = None, output: str | None = None,
                 scores: Literal["auto", "logits", "probabilities"] = "auto", threads: int | None = None) -> None:
        super().__init__()
        ort = require("onnxruntime")
        if scores not in SCORES:
            raise UsageError(f"--model.teacher_scores {scores!r}; valid: {', '.join(SCORES)}")
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable graphs
            raise UsageError(f"teacher {self.path} is not a readable ONNX model ({str(err).splitlines()[0][:160]})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        if input_name is None and len(inputs) != 1:
            raise UsageError(f"teacher {self.path} has inputs {sorted(inputs)}: pick the one the data feeds with "
                             "--model.teacher_input NAME")
        self.input_name = input_name or next(iter(inputs))
        if self.input_name not in inputs:
            raise UsageError(f"--model.teacher_input {input_name}: {self.path} has inputs {sorted(inputs)}")
        self.input_type = NUMPY_TYPES.get(inputs[self.input_name].type)
        if self.input_type is None:
            raise UsageError(f"teacher {self.path} takes {inputs[self.input_name].type} inputs; a teacher reads "
                             "float tensors")
        self.output_name = self._output(output)
        kind = next(o.type for o in self.session.get_outputs() if o.name == self.output_name)
        self.zipmap = kind.startswith("seq(map")
        self.probabilities = scores == "probabilities" or (scores == "auto" and (
            self.zipmap or "prob" in self.output_name.lower()))
        self.classes: tuple[str, ...] | None = None  # the data's class names, to read a ZipMap by
        self._warned = False  # outputs read as logits that look like probabilities: said once

    def _output(self, output: str | None) -> str:
        names = [o.name for o in self.session.get_outputs()]
        if output is not None:
            if output in names:
                return output
            if output.lstrip("-").isdigit() and -len(names) <= int(output) < len(names):
                return names[int(output)]
            raise UsageError(f"--model.teacher_output {output}: {self.path} has outputs {names}")
        if len(names) == 1:
            return names[0]
        scored = [n for n in names if "prob" in n.lower()]
        if len(scored) != 1:
            raise UsageError(f"teacher {self.path} has outputs {names}: pick the scores with --model.teacher_output "
                             "NAME (and say what they are with --model.teacher_scores logits|probabilities)")
        return scored[0]

    @property
    def stored_values(self) -> int:
        """Numbers the graph holds: its weights, and for tree ensembles one per split or leaf value."""
        return graph_values(self.path.read_bytes())

    @property
    def stored_bytes(self) -> int:
        """Size of the file it runs (its weights live there, not in a state dict)."""
        return self.path.stat().st_size

    def set_classes(self, classes: Sequence[str]) -> None:
        """The data's class names, in the order of the student's outputs (a ZipMap is read by them)."""
        self.classes = tuple(str(c) for c in classes) or None

    def describe(self) -> str:
        """What it computes, for cache keys: the file's bytes, and which output it is read as."""
        from distill.teacher.sources import file_digest

        return (f"onnx={file_digest(self.path)},input={self.input_name},output={self.output_name},"
                f"probabilities={self.probabilities}")

    def _rows(self, outputs: Any) -> np.ndarray:
        """A ZipMap (a list of {class: probability}) as (B, K) in the data's class order."""
        keys = list(outputs[0]) if len(outputs) else []
        names = [str(k) for k in keys]
        if self.classes is not None and sorted(names) == sorted(self.classes):
            order = [keys[names.index(c)] for c in self.classes]
        elif self.classes is not None and names == [str(i) for i in range(len(self.classes))]:
            order = keys  # classes numbered as the data's, in its order
        elif self.classes is not None:
            raise UsageError(f"teacher {self.path} scores classes {names[:8]}, the data has {list(self.classes)[:8]}: "
                             "train or export it on the same labels")
        else:
            order = keys
        return np.array([[row[k] for k in order] for row in outputs], dtype=np.float32)

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> Tensor:
        array = inputs.detach().cpu().float().contiguous().numpy().astype(self.input_type, copy=False)
        try:
            outputs = self.session.run([self.output_name], {self.input_name: array})[0]
        except Exception as err:  # onnxruntime's own error types: the inputs do not fit the graph
            expected = next(i.shape for i in self.session.get_inputs() if i.name == self.input_name)
            raise UsageError(f"teacher {self.path} takes {self.input_name} of shape {expected}, the data gives "
                             f"{list(array.shape)} ({str(err).splitlines()[0][:120]}); give --data the columns and "
                             "preprocessing the model was trained on") from None
        scores = self._rows(outputs) if self.zipmap else np.asarray(outputs, dtype=np.float32)
        result = torch.from_numpy(scores.reshape(len(array), -1)).to(inputs.device)
        self._check_scores(result)
        if self.probabilities:  # log-probabilities: what a softmax of the losses turns back into these probabilities
            result = torch.log(result.clamp_min(1e-8))
        return result

    def _check_scores(self, scores: Tensor) -> None:
        """(B, K) outputs read as probabilities must be distributions; read as logits, they must not all be:
        either mistake gives soft targets far from the teacher's own with no other sign."""
        if scores.shape[1] < 2 or not len(scores):
            return
        sums = scores.double().sum(dim=1)
        distributions = bool((scores >= -1e-6).all()) and bool(((sums - 1).abs() <= 1e-3).all())
        if self.probabilities and not distributions:
            found = (f"a value of {float(scores.min()):.3g}" if bool((scores < -1e-6).any())
                     else f"rows summing to {float(sums[(sums - 1).abs().argmax()]):.3g}")
            how = "its name says so" if not self.zipmap else "it is a ZipMap"
            raise UsageError(f"teacher {self.path}: output {self.output_name!r} is read as probabilities ({how}) but "
                             f"holds {found}; if it holds scores or logits, --model.teacher_scores logits")
        if not self.probabilities and distributions and not self._warned:
            self._warned = True
            warnings.warn(f"teacher {self.path}: output {self.output_name!r} is read as logits but every row is a "
                          "probability distribution; if it holds probabilities, --model.teacher_scores probabilities "
                          "(as logits they make soft targets far flatter than the teacher's)", UserWarning, stacklevel=2)
