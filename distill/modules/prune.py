"""Stage three: structured pruning of a trained network, then fine-tuning it against the teacher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from distill.checkpoint import Trained, rebuild_data
from distill.errors import UsageError
from distill.export import require
from distill.losses import DISTILLERS, Distiller, method_name
from distill.losses.kd import kd_loss
from distill.models import count_parameters
from distill.modules.distill import DistillModule
from distill.modules.source import check_same_split, load_source
from distill.tasks import get_task
from distill.teacher import Teacher, TeacherSettings, build_teacher

IMPORTANCES = ("magnitude", "lamp", "taylor")


def prune_channels(network: nn.Module, input_shape: tuple[int, ...], ratio: float, importance: str = "magnitude",
                   round_to: int | None = None, iterative_steps: int = 1,
                   target_macs_reduction: float | None = None,
                   loss_of: Callable[[nn.Module], Tensor] | None = None) -> nn.Module:
    """Removes whole channels from ``network`` in place with torch-pruning's dependency graph (DepGraph).

    Layers coupled by BatchNorm, residual additions or concatenations lose the same channels; the
    last linear layer (the classes) is kept. Runs with autograd on (the library traces the network
    through it) and in eval mode (BatchNorm statistics untouched).

    Args:
        network: The trained network.
        input_shape: One input's shape (C, H, W), for tracing.
        ratio: Fraction of each prunable layer's channels removed, in (0, 1).
        importance: ``magnitude`` (L2 norm of each channel group's weights), ``lamp``
            (layer-adaptive magnitude, Lee et al. 2021) or ``taylor`` (first-order Taylor estimate
            of the loss change, |weight x gradient| of ``loss_of``; Molchanov et al. 2019).
        round_to: Keep channel counts multiples of this (SIMD-friendly widths); None: any count.
        iterative_steps: Reach ``ratio`` in this many equal steps, importance re-measured at each.
        target_macs_reduction: Instead of a fixed ratio: prune in ``iterative_steps`` steps toward
            ``ratio`` (then the largest ratio allowed) and stop at the first step whose MACs are at
            most 1/target of the original.
        loss_of: For ``taylor``: the loss whose gradients rank the channels, given the network
            (recomputed before each step).

    Raises:
        UsageError: bad settings, or a MACs target the network cannot reach.
    """
    tp = require("torch_pruning")
    if not 0.0 < ratio < 1.0:
        raise UsageError(f"pruning_ratio must be in (0, 1), got {ratio}")
    if importance not in IMPORTANCES:
        raise UsageError(f"unknown importance {importance!r}; valid: {', '.join(IMPORTANCES)}")
    if iterative_steps < 1 or (round_to is not None and round_to < 1):
        raise UsageError(f"iterative_steps and round_to must be >= 1, got {iterative_steps} and {round_to}")
    if importance == "taylor" and loss_of is None:
        raise UsageError("taylor importance needs a loss to take gradients of (loss_of)")
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    scorer = {"magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
              "lamp": lambda: tp.importance.LAMPImportance(p=2),
              "taylor": lambda: tp.importance.GroupTaylorImportance()}[importance]()
    was_training = network.training
    network.eval()
    if target_macs_reduction is not None and target_macs_reduction <= 1.0:
        raise UsageError(f"target_macs_reduction must be > 1, got {target_macs_reduction}")
    start_macs = macs(network, input_shape) if target_macs_reduction is not None else 0
    with torch.enable_grad():
        example = torch.zeros(1, *input_shape)
        pruner = tp.pruner.MetaPruner(network, example, importance=scorer, pruning_ratio=ratio,
                                      iterative_steps=iterative_steps, ignored_layers=linears[-1:], round_to=round_to)
        for _ in range(iterative_steps):
            if loss_of is not None and importance == "taylor":
                network.zero_grad(set_to_none=True)
                loss_of(network).backward()
            pruner.step()
            if target_macs_reduction is not None and start_macs >= target_macs_reduction * macs(network, input_shape):
                break
    network.zero_grad(set_to_none=True)
    network.train(was_training)
    if target_macs_reduction is not None and start_macs < target_macs_reduction * macs(network, input_shape):
        reached = start_macs / macs(network, input_shape)
        raise UsageError(f"a {target_macs_reduction}x MACs reduction cannot be reached with pruning_ratio {ratio} "
                         f"(reached {reached:.2f}x); raise --model.pruning_ratio")
    return network


def macs(network: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one input (torch-pruning's counter)."""
    tp = require("torch_pruning")
    with torch.no_grad():
        count, _ = tp.utils.count_ops_and_params(network, torch.zeros(1, *input_shape))
    return int(count)


def taylor_loss(source: Trained, teacher: Teacher, images: int, temperature: float) -> Callable[[nn.Module], Tensor]:
    """The distillation loss (at ``temperature``) of a network against ``teacher`` on the source's first
    ``images`` training inputs.

    The inputs are the unaugmented training split in order (``DistillData.training_inputs``), so
    pruning again on resume ranks the channels exactly as the first time.
    """
    if images < 1:
        raise UsageError(f"taylor_images must be >= 1, got {images}")
    data = rebuild_data(source)
    teacher.attach(data)
    batches, taken = [], 0
    for inputs, _ in data.training_inputs():
        batches.append(inputs[:images - taken].cpu())
        taken += len(batches[-1])
        if taken >= images:
            break
    with torch.no_grad():
        targets = [teacher(batch) for batch in batches]  # (B, K) each

    def loss_of(network: nn.Module) -> Tensor:
        total = sum(kd_loss(network(batch), target, temperature) * len(batch) for batch, target in zip(batches, targets))
        return total / taken

    return loss_of


def prune_source(source: Trained, input_shape: tuple[int, ...], ratio: float, importance: str = "magnitude",
                 round_to: int | None = None, iterative_steps: int = 1, target_macs_reduction: float | None = None,
                 loss_of: Callable[[nn.Module], Tensor] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The source checkpoint's network with channels removed, and what pruning did (plain values).

    Raises:
        UsageError: bad pruning settings.
    """
    network = source.network
    before = {"params": count_parameters(network), "macs": macs(network, input_shape)}
    prune_channels(network, input_shape, ratio, importance, round_to, iterative_steps, target_macs_reduction, loss_of)
    after = {"params": count_parameters(network), "macs": macs(network, input_shape)}
    return network, {"source_ckpt": str(source.path), "importance": importance, "source_params": before["params"],
                     "source_macs": before["macs"], "macs": after["macs"],
                     "macs_reduction": before["macs"] / max(after["macs"], 1),
                     "params_reduction": before["params"] / max(after["params"], 1)}


class PruneModule(DistillModule):
    """A distillation of a pruned network: ``source_ckpt``'s channels removed, then fine-tuned against the teacher.

    The pruned network's checkpoints hold its narrower layers as plain tensors: it is evaluated,
    exported and used as a teacher like any other (``distill.checkpoint`` rebuilds it at its widths).
    Resuming prunes the source again (deterministically) before the weights are loaded.

    Args:
        source_ckpt: The trained network to prune (by default the demo's student).
        pruning_ratio: Fraction of channels removed from each prunable layer, in (0, 1).
        importance: How channels are ranked: ``magnitude``, ``lamp`` or ``taylor`` (gradients of the
            KD loss against the teacher, at the method's ``temperature`` (Hinton's 4 for a method
            without one), on the first ``taylor_images`` training inputs of the data the source was
            trained on, unaugmented and in order: deterministic; for classifiers).
        round_to: Keep channel counts multiples of this (e.g. 8 or 16 for vectorized kernels); None: any.
        iterative_steps: Reach the ratio in this many steps (importance re-measured at each).
        target_macs_reduction: Stop pruning, step by step toward ``pruning_ratio``, once the MACs are
            at most 1/target of the source's (e.g. 4.0 with ``pruning_ratio 0.9`` and ``iterative_steps 20``).
        taylor_images: Training inputs whose gradients rank the channels under ``taylor``.
        model: The source's architecture, read from ``source_ckpt`` (None); another name is refused.
        **kwargs: Everything ``DistillModule`` takes: the teacher the pruned network is fine-tuned
            against (``teacher`` or ``teacher_ckpt``), method, teacher views and cache, optimizer, schedule.
    """

    def __init__(self, source_ckpt: str = "checkpoints/student/best.ckpt",
                 pruning_ratio: float = 0.5, importance: Literal["magnitude", "lamp", "taylor"] = "magnitude",
                 round_to: int | None = None, iterative_steps: int = 1, target_macs_reduction: float | None = None,
                 taylor_images: int = 512, model: str | None = None, **kwargs: Any) -> None:
        source = load_source(source_ckpt, model, kwargs)
        if source.hparams.get("quantization"):
            raise UsageError(f"source {source.path} is quantization-aware: prune its float source, then train "
                             "the pruned network int8-aware (distill.train qat)")
        num_classes, shape = source.hparams["num_classes"], tuple(source.hparams["input_shape"])
        loss_of = None
        if importance == "taylor":  # the teacher, built once, ranks the channels and then teaches the pruned network
            task = get_task(kwargs.get("task"))
            method: Distiller = kwargs.get("method") or DISTILLERS.get(task.default_method)()
            teacher = build_teacher(TeacherSettings.from_hparams(kwargs), num_classes, shape, task.name,
                                    reads_features=method_name(method) if method.teacher_features else None)
            if kwargs.get("channels_last", True):  # as the stage will run it
                teacher = teacher.to(memory_format=torch.channels_last)
            kwargs = {**kwargs, "teacher": teacher, "teacher_ckpt": None}
            loss_of = taylor_loss(source, teacher, taylor_images, getattr(method, "temperature", 4.0))
        network, pruning = prune_source(source, shape, pruning_ratio, importance, round_to, iterative_steps,
                                             target_macs_reduction, loss_of)
        super().__init__(model=network, model_kwargs=source.hparams.get("model_kwargs"), **kwargs)
        self.hparams["model"] = source.hparams["model"]  # checkpoints name the architecture they rebuild
        self.pruning = pruning
        self.source = source  # its split is checked against the data's (setup)

    def report_metrics(self) -> dict[str, Any]:
        return {**super().report_metrics(), **self.pruning}

    def setup(self, stage: str) -> None:
        check_same_split(self.source, self.trainer.datamodule)
        super().setup(stage)
