"""What a teacher sees: the student's inputs turned into the inputs the teacher was made for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import UsageError

NORMALIZATIONS = {  # per-channel (mean, std) of pixel values in [0, 1]
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0,), (1.0,)),
}


def first_conv_channels(network: nn.Module) -> int | None:
    """Input channels of the network's first convolution (None: it has none)."""
    conv = next((m for m in network.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    return None if conv is None else conv.in_channels


def select_output(outputs: Any, selector: str | None) -> Tensor:
    """The logits among a network's outputs: a tensor itself, ``outputs[selector]`` of a dict or a
    tuple (an integer selector), or the attribute ``selector`` (e.g. ``logits``)."""
    if selector is None:
        if isinstance(outputs, Tensor):
            return outputs
        raise UsageError(f"the teacher returns a {type(outputs).__name__}, not a tensor of logits; pick them with "
                         "--model.teacher_output (a key, an index or an attribute name, e.g. logits or 0)")
    if isinstance(outputs, Mapping):
        if selector not in outputs:
            raise UsageError(f"--model.teacher_output {selector}: the teacher's outputs have keys {sorted(outputs)}")
        return outputs[selector]
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        if not selector.lstrip("-").isdigit() or not -len(outputs) <= int(selector) < len(outputs):
            raise UsageError(f"--model.teacher_output {selector}: the teacher returns {len(outputs)} outputs; "
                             "pick one by index")
        return outputs[int(selector)]
    if not hasattr(outputs, selector):
        raise UsageError(f"--model.teacher_output {selector}: a {type(outputs).__name__} has no such attribute")
    return getattr(outputs, selector)


class TeacherView(nn.Module):
    """Wraps a teacher: student-ready inputs (B, C, H, W) in, the teacher's logits (B, K) out.

    In order: the data's normalization is undone (pixels back in [0, 1]), grey images are repeated
    to the three channels a colour teacher expects, the images are resized (bilinear) to the
    teacher's input size and normalized as the teacher was trained; the logits are picked from
    the teacher's outputs by ``output``. Every step is skipped when not asked for.

    Args:
        network: The teacher.
        input_size: Side of the square images the teacher takes (None: the data's).
        normalize: The teacher's normalization: a name of ``NORMALIZATIONS`` (None: the data's).
        channels: Input channels of the teacher (None: the data's).
        output: Logit selector for teachers returning dicts, tuples or objects (None: a tensor).
        normalization: Instead of ``normalize``'s name, the teacher's own per-channel (mean, std), as
            its checkpoint recorded them (a teacher trained on data normalized otherwise than the student's).
    """

    def __init__(self, network: nn.Module, input_size: int | None = None, normalize: str | None = None,
                 channels: int | None = None, output: str | None = None,
                 normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        super().__init__()
        if normalization is not None:
            normalize = "recorded"
        elif normalize is not None and normalize not in NORMALIZATIONS:
            raise UsageError(f"unknown teacher normalization {normalize!r}; valid: {', '.join(NORMALIZATIONS)}")
        if input_size is not None and input_size < 8:
            raise UsageError(f"teacher_input_size must be >= 8, got {input_size}")
        self.network, self.input_size, self.normalize, self.channels, self.output = (
            network, input_size, normalize, channels, output)
        mean, std = normalization or (NORMALIZATIONS[normalize] if normalize else ((0.0,), (1.0,)))
        self.recorded = None if normalization is None else (tuple(map(float, mean)), tuple(map(float, std)))
        self.register_buffer("teacher_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("teacher_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("data_mean", torch.zeros(1, 1, 1, 1), persistent=False)
        self.register_buffer("data_std", torch.ones(1, 1, 1, 1), persistent=False)

    def set_data_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The per-channel (mean, std) the data's inputs were normalized with, undone before ``normalize``
        (until set: mean 0, std 1; the distillation system sets it from the data before training)."""
        device = self.data_mean.device
        self.data_mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.data_std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def describe(self) -> str:
        """The adapters, for cache keys and reports."""
        normalize = self.normalize if self.recorded is None else f"mean={list(self.recorded[0])},std={list(self.recorded[1])}"
        return f"input_size={self.input_size},normalize={normalize},channels={self.channels},output={self.output}"

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs
        if self.normalize is not None:
            x = x * self.data_std + self.data_mean  # pixels in [0, 1]
        if self.channels is not None and x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)  # (B, 1, H, W) -> (B, 3, H, W); checked at construction
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.normalize is not None:
            x = (x - self.teacher_mean) / self.teacher_std
        return select_output(self.network(x), self.output)


def recorded_normalization(data_hparams: dict[str, Any] | None) -> tuple[list[float], list[float]] | None:
    """The per-channel (mean, std) a checkpoint's image data recorded (image folders always do), or None."""
    if not data_hparams or data_hparams.get("mean") is None or data_hparams.get("std") is None:
        return None
    return list(data_hparams["mean"]), list(data_hparams["std"])


def same_normalization(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    return all(len(x) == len(y) and all(abs(float(p) - float(q)) < 1e-9 for p, q in zip(x, y))
               for x, y in zip(a, b))


def as_trained(network: Any, data_hparams: dict[str, Any] | None, normalization: Any) -> Any:
    """``network`` reading images normalized with ``normalization`` as its own training normalized them.

    Wrapped in a ``TeacherView`` (the data's normalization undone, the recorded one applied) when the two
    differ; returned as it is when they are alike, when either is unknown, or when it is not a module
    (an ONNX file carries its own data settings).
    """
    own = recorded_normalization(data_hparams)
    if own is None or normalization is None or not isinstance(network, nn.Module) or \
            same_normalization(own, normalization):
        return network
    device = next(network.parameters(), torch.empty(0)).device
    view = TeacherView(network, normalization=own).to(device)
    view.set_data_normalization(*normalization)
    return view.eval()

