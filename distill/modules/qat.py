"""Quantization-aware distillation: a trained network fine-tuned int8-aware against its teacher."""

from __future__ import annotations

from typing import Any

import torch

from distill.checkpoint import rebuild_data
from distill.errors import UsageError
from distill.losses import DISTILLERS, Distiller, method_name
from distill.models.quantized import QuantizationAware
from distill.models.target_scale import TargetScale
from distill.modules.distill import DistillModule
from distill.modules.source import check_same_split, load_source
from distill.tasks import get_task


def calibration_inputs(source: Any, count: int) -> list[torch.Tensor]:
    """The first ``count`` training inputs of the data ``source`` was trained on, unaugmented and in order."""
    if count < 1:
        raise UsageError(f"calibration must be >= 1 inputs, got {count}")
    batches, taken = [], 0
    for inputs, _ in rebuild_data(source).training_inputs():
        batches.append(inputs[:count - taken].cpu())
        taken += len(batches[-1])
        if taken >= count:
            break
    return batches


class QATModule(DistillModule):
    """``source_ckpt``'s network with int8 fake quantization (``QuantizationAware``), fine-tuned against the teacher.

    Activation ranges are calibrated on the first ``calibration`` training inputs (deterministic: a
    resumed run calibrates alike before its weights are loaded) and frozen; BatchNorm is folded with
    its frozen running statistics; weights keep per-channel ranges that follow them. The checkpoint
    is exported by ``distill.compress`` as an int8 ONNX file computing what the network computed here.

    Args:
        source_ckpt: The trained network (a student, or a pruned one).
        calibration: Training inputs that set the activation ranges.
        reduce_range: 7-bit activations, for x86 CPUs without VNNI, whose int8 kernels saturate on full
            8-bit products (``distill.models.quantized``); ``distill.compress`` checks the file on the CPU
            it runs on and refuses one that does not compute what the network did.
        model: The source's architecture, read from ``source_ckpt`` (None); another name is refused.
        **kwargs: Everything ``DistillModule`` takes: the teacher, a method reading logits (KD, DKD,
            DIST; feature methods need named layers a quantized graph does not keep), teacher views
            and cache, optimizer, schedule.
    """

    def __init__(self, source_ckpt: str = "checkpoints/student/best.ckpt", calibration: int = 512,
                 reduce_range: bool = False, model: str | None = None, **kwargs: Any) -> None:
        source = load_source(source_ckpt, model, kwargs)
        if source.hparams.get("quantization"):
            raise UsageError(f"source {source.path} is quantization-aware already; give its float source")
        task = get_task(kwargs.get("task"))
        method: Distiller = kwargs.get("method") or DISTILLERS.get(task.default_method)()
        if method.student_features or method.teacher_features:
            raise UsageError(f"the {method_name(method)} method reads the student's layers, which a quantized graph "
                             "does not keep by name: quantization-aware training takes a logit method (kd, dkd, dist)")
        network = source.network.network if isinstance(source.network, TargetScale) else source.network
        quantized = QuantizationAware(network, tuple(source.hparams["input_shape"]), reduce_range)
        seen = quantized.calibrate(calibration_inputs(source, calibration))
        # NHWC weights would be re-laid-out inside the exported graph on every step: kept as exported
        super().__init__(model=quantized, model_kwargs=source.hparams.get("model_kwargs"), channels_last=False,
                         **kwargs)
        self.hparams["model"] = source.hparams["model"]  # checkpoints name the architecture they rebuild
        self.hparams["quantization"] = quantized.settings()
        self.source = source  # its split is checked against the data's (setup)
        self.quantization = {"source_ckpt": str(source.path), "calibration_inputs": seen,
                             "reduce_range": reduce_range, "quantization": quantized.settings()["scheme"]}

    def report_metrics(self) -> dict[str, Any]:
        return {**super().report_metrics(), **self.quantization}

    def setup(self, stage: str) -> None:
        check_same_split(self.source, self.trainer.datamodule)
        super().setup(stage)
