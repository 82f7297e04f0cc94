"""Optimizers and learning-rate schedules by name, with warmup, and L2 regularization both ways.

Every schedule except ``plateau`` is a per-step multiplier of the base learning rate, so warmup
composes with any of them the same way: ``lr(step) = base_lr * warmup(step) * decay(step)``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from distill.errors import UsageError
from distill.registry import Registry

OPTIMIZERS: Registry[Callable[..., Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("scheduler")
PLATEAU = "plateau"  # the one schedule driven by a validation metric, not by the step count


@OPTIMIZERS.register
def sgd(params: list[dict], lr: float, momentum: float, nesterov: bool) -> Optimizer:
    if nesterov and momentum <= 0:
        raise UsageError("nesterov needs momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov)


@OPTIMIZERS.register
def adam(params: list[dict], lr: float, betas: tuple[float, float], eps: float) -> Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


@OPTIMIZERS.register
def adamw(params: list[dict], lr: float, betas: tuple[float, float], eps: float) -> Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps)


@OPTIMIZERS.register
def adamax(params: list[dict], lr: float, betas: tuple[float, float], eps: float) -> Optimizer:
    return torch.optim.Adamax(params, lr=lr, betas=betas, eps=eps)


@OPTIMIZERS.register
def adagrad(params: list[dict], lr: float, eps: float) -> Optimizer:
    return torch.optim.Adagrad(params, lr=lr, eps=eps)


@OPTIMIZERS.register
def adadelta(params: list[dict], lr: float, eps: float) -> Optimizer:
    return torch.optim.Adadelta(params, lr=lr, eps=eps)


@OPTIMIZERS.register
def rmsprop(params: list[dict], lr: float, momentum: float, eps: float) -> Optimizer:
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, eps=eps)


def split_decay_groups(model: nn.Module, decay_norm_and_bias: bool) -> tuple[list[Tensor], list[Tensor]]:
    """Splits trainable parameters into (decayed, not decayed).

    Biases and normalization-layer parameters are not decayed unless ``decay_norm_and_bias``:
    shrinking them changes no capacity, only the scale the next layer sees.
    """
    decay, no_decay = [], []
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            exempt = isinstance(module, norm_types) or name == "bias"
            (no_decay if exempt and not decay_norm_and_bias else decay).append(param)
    return decay, no_decay


def l2_penalty(params: Iterable[Tensor]) -> Tensor:
    """Classic L2 regularization term 1/2 * sum ||W||^2 (multiply by lambda), as a loss term."""
    return 0.5 * sum((p.pow(2).sum() for p in params), torch.zeros(()))


def used_by(factory: Callable[..., Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The settings ``factory`` declares: each optimizer's signature names only what it uses."""
    accepted = inspect.signature(factory).parameters
    return {name: value for name, value in settings.items() if name in accepted}


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, decay_norm_and_bias: bool,
                    momentum: float = 0.9, nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> Optimizer:
    """Builds optimizer ``name`` over ``model``'s trainable parameters with decoupled weight decay.

    ``weight_decay`` goes to every parameter group that is decayed (see ``split_decay_groups``);
    for SGD, Adam and the others this is the optimizer's own ``weight_decay``, for AdamW the
    decoupled form.
    """
    factory = OPTIMIZERS.get(name)
    decay, no_decay = split_decay_groups(model, decay_norm_and_bias)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    settings = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "betas": betas, "eps": eps}
    return factory(groups, **used_by(factory, settings))


# Schedules: each returns decay(step) for steps counted after warmup, over `steps` steps.
@SCHEDULES.register
def constant(steps: int, **_: float) -> Callable[[int], float]:
    return lambda step: 1.0


@SCHEDULES.register
def cosine(steps: int, min_lr_ratio: float = 0.0, **_: float) -> Callable[[int], float]:
    return lambda step: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps)))


@SCHEDULES.register
def step(steps: int, step_size: int = 1000, gamma: float = 0.1, **_: float) -> Callable[[int], float]:
    return lambda s: gamma ** (s // max(1, step_size))


@SCHEDULES.register
def multistep(steps: int, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1, **_: float) -> Callable[[int], float]:
    # Milestones <= 1 are fractions of the decay steps (0.625 of 240 epochs = epoch 150), larger ones step counts.
    points = sorted(int(m * steps) if m <= 1 else int(m) for m in milestones)
    return lambda s: gamma ** sum(s >= p for p in points)


@SCHEDULES.register
def exponential(steps: int, gamma: float = 0.1, **_: float) -> Callable[[int], float]:
    # gamma is the factor reached at the end of training, spread evenly over the steps.
    return lambda s: gamma ** (min(s, steps) / max(1, steps))


@SCHEDULES.register
def polynomial(steps: int, power: float = 1.0, min_lr_ratio: float = 0.0, **_: float) -> Callable[[int], float]:
    return lambda s: min_lr_ratio + (1 - min_lr_ratio) * (1 - min(s, steps) / max(1, steps)) ** power


@SCHEDULES.register
def onecycle(steps: int, min_lr_ratio: float = 1e-4, **_: float) -> Callable[[int], float]:
    """Cosine annealing from the peak, the decay half of one-cycle (Smith & Topin 2019);
    its ramp-up half is the warmup, 30% of training unless warmup is set."""
    return cosine(steps, min_lr_ratio=min_lr_ratio)


SCHEDULES.register(lambda steps, **_: (lambda s: 1.0), name=PLATEAU)


def warmup_steps_for(total_steps: int, warmup_steps: int, warmup_fraction: float, scheduler: str) -> int:
    """Warmup length in steps: explicit steps win, then the fraction; one-cycle defaults to 30%."""
    if warmup_steps > 0:
        return min(warmup_steps, total_steps)
    if warmup_fraction > 0:
        return int(total_steps * warmup_fraction)
    return int(total_steps * 0.3) if scheduler == "onecycle" else 0


def build_scheduler(name: str, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                    **params: float) -> LRScheduler:
    """Per-step LR multiplier: linear warmup from 0 over ``warmup_steps``, then schedule ``name``.

    Args:
        name: Registered schedule (``list(SCHEDULES.names())``).
        optimizer: The optimizer whose base LRs are scaled.
        total_steps: Optimizer steps in the whole run.
        warmup_steps: Steps of linear warmup before the schedule starts.
        **params: Schedule parameters (gamma, step_size, milestones, power, min_lr_ratio).
    """
    decay_steps = max(1, total_steps - warmup_steps)
    decay = SCHEDULES.get(name)(decay_steps, **params)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return decay(step - warmup_steps)

    return LambdaLR(optimizer, factor)


def build_plateau(optimizer: Optimizer, mode: str, gamma: float, patience: int) -> ReduceLROnPlateau:
    """LR x ``gamma`` when the monitored validation metric stalls for ``patience`` epochs."""
    return ReduceLROnPlateau(optimizer, mode=mode, factor=gamma, patience=patience)
