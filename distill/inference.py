"""Running a trained artifact: load any of them (checkpoint or ONNX), run it over the test set, score it.

Every command that reports on a network (the stage's finish, ``evaluate``, ``compress``,
``predict``) runs it through here, so each test sample is counted exactly once everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.checkpoint import Trained, load_trained
from distill.data.interface import task_of
from distill.errors import UsageError
from distill.export import OnnxClassifier
from distill.runtime import SessionOptions
from distill.tasks import get_task


@torch.no_grad()
def test_outputs(model: nn.Module | OnnxClassifier, data: Any, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """(N, K) outputs and (N,) labels over the whole test set, every sample exactly once (``DistillData.test_batches``)."""
    model = model.eval().to(device)
    all_outputs, all_labels = [], []
    for inputs, labels in data.test_batches():
        all_outputs.append(model(inputs.to(device)).float().cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_outputs), torch.cat(all_labels)


def test_figures(model: nn.Module | OnnxClassifier, data: Any, device: torch.device | str) -> dict[str, float]:
    """The ``test/...`` figures of ``model`` over the whole test set, as the data's task scores them."""
    outputs, labels = test_outputs(model, data, device)
    return get_task(task_of(data)).test_figures(outputs, labels)


def load_artifact(path: Path) -> Trained:
    """A checkpoint, or an ONNX file from ``distill.compress`` with the ``.json`` written beside it.

    For an ONNX file, ``network`` is an ``OnnxClassifier`` and the hyperparameters are those the
    ``.json`` records (architecture, classes, input shape, parameters and FLOPs of its source).

    Raises:
        UsageError: the file or its ``.json`` is missing or unreadable.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        return load_trained(path)
    if not path.is_file():
        raise UsageError(f"{path} not found")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise UsageError(f"{sidecar} not found: distill.compress writes the preprocessing of {path.name} there")
    try:
        spec = json.loads(sidecar.read_text())
        hparams = {"model": spec["model"], "num_classes": int(spec["num_classes"]),
                   "input_shape": list(spec["input_shape"]), "params": int(spec["params"]), "flops": None if spec.get("flops") is None else int(spec["flops"]),
                   "format": spec["format"], "task": spec.get("task", "classification")}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{sidecar} is not the description distill.compress writes ({type(err).__name__}: {err})") from None
    try:
        sessions = {kind: SessionOptions.from_dict(options) for kind, options in (spec.get("session") or {}).items()}
        network = OnnxClassifier(path, sessions=sessions)  # as compress timed it, where it recorded how
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        if isinstance(err, UsageError):  # the optional dependency is missing
            raise
        raise UsageError(f"{path} is not a readable ONNX model ({str(err).splitlines()[0][:160]})") from None
    return Trained(path, network, hparams, dict(spec.get("data") or {}), spec.get("data_module"))  # type: ignore[arg-type]
