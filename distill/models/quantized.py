"""A network trained int8-aware: fake quantization as onnxruntime will run it, by torchao's PT2E flow.

``QuantizationAware`` exports a float network (``torch.export``) and has torchao insert fake
quantization where its x86 quantizer puts int8 kernels: weights per output channel (int8,
symmetric), activations per tensor (uint8, asymmetric), convolutions fused with the ReLU after
them. BatchNorm is folded into the layer before it with its running statistics, before anything
else, so the fake quantization sees exactly the weights the int8 file holds; activation ranges are calibrated on training inputs, then frozen, so the file quantizes
them as training saw them; weight ranges follow the weights while training (a moving average of
each channel's extremes) and are frozen, at the weights' own extremes, in eval mode. ``converted()`` is the quantized graph whose
ONNX export is QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer kernels.

``reduce_range`` keeps activations to 7 bits: on x86 CPUs without VNNI, onnxruntime's uint8 x int8
products otherwise saturate 16-bit accumulators (its own advice). It is off by default: with VNNI
(or on ARM) it costs accuracy, and coarser steps make the file and the network part more often
(measured on the demo's student, 1,000 test images: 99.3 % top-1 agreement with it, 99.8 % without).

Needs the ``quantize`` extra (torchao); a missing package is a one-line error naming it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import UsageError

SCHEME = "torchao-pt2e-x86"  # recorded in checkpoints: how the fake quantization was built


def _pt2e() -> tuple[Any, Any]:
    """torchao's PT2E entry points and its x86 quantizer module, or a one-line error naming the extra."""
    # torchao registers an enum with torch's pytree at import and torch logs a deprecation about it
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        pt2e = importlib.import_module("torchao.quantization.pt2e")
        quantize = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
        x86 = importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    except ModuleNotFoundError:
        raise UsageError('quantization-aware training needs torchao: pip install -e ".[quantize]"') from None
    return (pt2e, quantize), x86


def _config(pt2e: Any, x86: Any, reduce_range: bool) -> Any:
    """torchao's x86 QAT configuration with plain fake quantizers.

    Its fused ones compute the scale they apply with another formula than the one ``convert_pt2e``
    quantizes with (a range over 128 steps against 127.5), so a trained network and its int8 file
    differed in the last step of many weights: 99.5 % top-1 agreement on the demo's test set. Plain
    ``FakeQuantize`` applies the observer's own scale, the one the export uses.
    """
    default = x86.get_default_x86_inductor_quantization_config(is_qat=True, reduce_range=reduce_range)
    activation = pt2e.FakeQuantize.with_args(observer=pt2e.MovingAverageMinMaxObserver, eps=2**-12)
    weight = pt2e.FakeQuantize.with_args(observer=pt2e.MovingAveragePerChannelMinMaxObserver, eps=2**-12)
    return dataclasses.replace(
        default, input_activation=dataclasses.replace(default.input_activation, observer_or_fake_quant_ctr=activation),
        output_activation=dataclasses.replace(default.output_activation, observer_or_fake_quant_ctr=activation),
        weight=dataclasses.replace(default.weight, observer_or_fake_quant_ctr=weight))


def _is_weight_quantizer(module: nn.Module) -> bool:
    """A fake quantizer of weights (per channel) rather than of activations (per tensor)."""
    return getattr(module, "qscheme", None) in (torch.per_channel_symmetric, torch.per_channel_affine)


def _fake_quantizers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if hasattr(m, "observer_enabled") and hasattr(m, "fake_quant_enabled")]


def fold_batchnorm(network: nn.Module) -> int:
    """Folds every BatchNorm that directly follows a convolution or linear layer in an ``nn.Sequential`` into
    that layer (its running statistics, as an export folds them), in place; returns how many were folded.

    Folded first, the int8 file quantizes exactly the weights the fake quantization saw; left to torchao's
    own conv-BatchNorm fusion, the fold is computed twice with different roundings and 0.8 % of the demo's
    test images changed class between the trained network and its file.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = 0
    for sequence in [m for m in network.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequence) - 1):
            layer, norm = sequence[i], sequence[i + 1]
            if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
                sequence[i] = fuse_conv_bn_eval(layer.eval(), norm.eval())
            elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                sequence[i] = fuse_linear_bn_eval(layer.eval(), norm.eval())
            else:
                continue
            # a layer without a bias gets one that torch leaves frozen (requires_grad of a zeros_like)
            sequence[i].requires_grad_(layer.weight.requires_grad)
            sequence[i + 1] = nn.Identity()
            folded += 1
    return folded


class QuantizationAware(nn.Module):
    """``network`` with int8 fake quantization: inputs (B, ...) -> outputs as the int8 file will compute them.

    Args:
        network: The trained float network (a registry architecture, possibly pruned).
        input_shape: One input's shape (C, H, W) or (F,).
        reduce_range: 7-bit activations (module docstring).

    Raises:
        UsageError: torchao is missing, or the network cannot be exported (``torch.export``).
    """

    def __init__(self, network: nn.Module, input_shape: Sequence[int], reduce_range: bool = False) -> None:
        super().__init__()
        (pt2e, quantize), x86 = _pt2e()
        self.input_shape = tuple(input_shape)
        self.reduce_range = reduce_range
        network = copy.deepcopy(network)
        fold_batchnorm(network)
        self.float_shapes = {name: list(t.shape) for name, t in network.state_dict().items()}
        quantizer = x86.X86InductorQuantizer().set_global(_config(pt2e, x86, reduce_range))
        example = torch.randn(2, *self.input_shape)
        network.train()  # exported in training form (torchao fuses a BatchNorm left unfolded with its conv)
        try:
            exported = torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        except Exception as err:  # torch.export raises many types for code it cannot trace
            raise UsageError(f"the network cannot be exported for quantization ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:160]})") from None
        try:
            graph = quantize.prepare_qat_pt2e(exported.module(), quantizer)
        except (ValueError, RuntimeError, AssertionError) as err:  # a graph torchao's patterns do not cover
            raise UsageError(f"torchao cannot place fake quantization in this network's graph ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:160]})") from None
        pt2e.move_exported_model_to_eval(graph)  # BatchNorm on its running statistics: folded as the export folds it
        self.graph = graph
        self._observe(weights=True, activations=True)

    def settings(self) -> dict[str, Any]:
        """What rebuilds it from a checkpoint (plain values): the scheme, the range, the float network's shapes."""
        return {"scheme": SCHEME, "reduce_range": self.reduce_range, "float_shapes": self.float_shapes}

    def _weights_of_quantizers(self) -> dict[str, str]:
        """Each weight fake quantizer's module name -> the parameter it quantizes (from the graph)."""
        return {str(node.target): str(node.args[0].target) for node in self.graph.graph.nodes
                if node.op == "call_module" and node.args and getattr(node.args[0], "op", None) == "get_attr"
                and _is_weight_quantizer(self.graph.get_submodule(str(node.target)))}

    @torch.no_grad()
    def _observe(self, weights: bool, activations: bool) -> None:
        if not weights:  # weight ranges frozen at the weights' own extremes: the export observes them again
            for name, parameter in self._weights_of_quantizers().items():
                quantizer = self.graph.get_submodule(name)
                observer = quantizer.activation_post_process
                constant, observer.averaging_constant = observer.averaging_constant, 1.0
                quantizer.observer_enabled[0] = 1
                quantizer(self.graph.get_parameter(parameter))
                observer.averaging_constant = constant
        for quantizer in _fake_quantizers(self.graph):
            on = weights if _is_weight_quantizer(quantizer) else activations
            quantizer.observer_enabled[0] = int(on)
            if not on and quantizer.activation_post_process.min_val.numel():
                # frozen: the scale applied is the one the int8 export computes from the range
                scale, zero_point = quantizer.calculate_qparams()
                quantizer.scale.copy_(scale.reshape(quantizer.scale.shape))
                quantizer.zero_point.copy_(zero_point.reshape(quantizer.zero_point.shape))

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Tensor]) -> int:
        """Activation ranges from ``batches`` (training inputs), then frozen; returns the inputs seen.

        Raises:
            UsageError: no inputs.
        """
        self._observe(weights=True, activations=True)
        seen = 0
        for batch in batches:
            self.graph(batch)
            seen += len(batch)
        if not seen:
            raise UsageError("no calibration inputs")
        self._observe(weights=self.training, activations=False)
        return seen

    def train(self, mode: bool = True) -> "QuantizationAware":
        """Weight ranges follow the weights while training and are frozen otherwise; BatchNorm, dropout and
        activation ranges stay as calibrated (the graph is in its evaluation form throughout)."""
        self.training = mode
        self._observe(weights=mode, activations=False)
        return self

    def forward(self, inputs: Tensor) -> Tensor:
        return self.graph(inputs)

    def converted(self) -> nn.Module:
        """The quantized graph (int8 weights, quantize/dequantize pairs) the ONNX file is exported from.

        An exported graph refuses ``train``/``eval``; torchao's switch makes them move it between its forms.
        """
        (pt2e, quantize), _ = _pt2e()
        self._observe(weights=False, activations=False)  # the weight ranges as the last forward used them
        graph = quantize.convert_pt2e(copy.deepcopy(self.graph))
        pt2e.allow_exported_model_train_eval(graph)
        graph.training = False  # (torchao's switch moves the graph, not the flag the ONNX export reads)
        return graph


def quantization_aware(network: nn.Module, input_shape: Sequence[int], settings: dict[str, Any]) -> QuantizationAware:
    """Rebuilds the quantization-aware form a checkpoint recorded (``QuantizationAware.settings``), for its weights.

    Raises:
        UsageError: another scheme than this version builds.
    """
    if settings.get("scheme") != SCHEME:
        raise UsageError(f"quantization scheme {settings.get('scheme')!r}: this version builds {SCHEME!r}")
    from distill.checkpoint import fit_to_weights  # the pruned widths of the float network

    fold_batchnorm(network.eval())  # the float network as it was quantized: BatchNorm folded, pruned widths
    fit_to_weights(network, {name: torch.empty(shape) for name, shape in settings["float_shapes"].items()})
    return QuantizationAware(network, input_shape, bool(settings.get("reduce_range", False)))


def quantized_graph(model: nn.Module) -> nn.Module:
    """The int8 graph of a quantization-aware network, inside the task's wrapper when it has one (regression)."""
    from distill.models.target_scale import TargetScale

    if isinstance(model, TargetScale) and isinstance(model.network, QuantizationAware):
        return TargetScale(model.network.converted(), float(model.mean), float(model.std)).eval()
    if not isinstance(model, QuantizationAware):
        raise UsageError(f"a {type(model).__name__} is not quantization-aware")
    return model.converted()
