"""What a model costs to keep and to run: parameters, bytes, FLOPs, latency, throughput."""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from distill.models import count_parameters


def weights_bytes(model: nn.Module) -> int:
    """Size of the exported weights (``torch.save`` of the state dict, and files run beside it), in bytes."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    # an ONNX graph run as a member keeps its weights in its own file
    return buffer.getbuffer().nbytes + sum(getattr(m, "stored_bytes", 0) for m in model.modules())


def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """Forward FLOPs for one image (a multiply-add counts 2), by ``torch.utils.flop_counter``; None for a model
    that runs outside torch (tree ensembles, ONNX graphs: their ``stored_values``), whose work it cannot see."""
    if runs_outside_torch(model):
        return None
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    return int(counter.get_total_flops())


@torch.no_grad()
def _median_seconds(model: nn.Module, batch: torch.Tensor, runs: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    for _ in range(warmup):
        model(batch)
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(batch)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, runs: int = 30,
          warmup: int = 5, throughput_batch: int = 256) -> dict[str, Any]:
    """Median latency at batch 1 and throughput at ``throughput_batch`` on ``device`` (eval mode).

    Returns:
        ``latency_ms`` (batch 1), ``throughput`` (images/s), and the device / CPU threads used.
    """
    model = model.eval().to(device)
    one = torch.randn(1, *input_shape, device=device)
    many = torch.randn(throughput_batch, *input_shape, device=device)
    latency = _median_seconds(model, one, runs, warmup)
    batch_time = _median_seconds(model, many, max(3, runs // 5), max(1, warmup // 2))
    return {
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "latency_ms": 1000 * latency,
        "throughput": throughput_batch / batch_time,
        "throughput_batch": throughput_batch,
    }


def runs_outside_torch(model: nn.Module) -> bool:
    """Whether part of ``model`` is run by another library (a tree ensemble or ONNX graph under onnxruntime)."""
    return any(getattr(m, "stored_values", 0) for m in model.modules())


def cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Parameters, exported size and FLOPs per sample."""
    return {"params": count_parameters(model), "weights_bytes": weights_bytes(model),
            "flops": flops_per_sample(model, input_shape)}
