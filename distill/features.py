"""Intermediate features by module name, captured with forward hooks (torchdistill's approach).

A network is never edited to expose its features: a ``FeatureRecorder`` hooks the named modules
and keeps what they return during one forward pass. Registry architectures publish short aliases
(``stage1``, ``stage2``, ..., ``penultimate``) in a ``feature_aliases`` attribute; any other
``nn.Module`` is tapped by the names of ``named_modules()``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.errors import UsageError


def feature_aliases(model: nn.Module) -> dict[str, str]:
    """The aliases a network publishes: alias -> module name (empty for networks that publish none)."""
    return dict(getattr(model, "feature_aliases", {}) or {})


def resolve_feature(model: nn.Module, name: str) -> str:
    """The module name ``name`` stands for in ``model`` (an alias or a module name).

    Raises:
        UsageError: no such alias or module; the message lists the closest names.
    """
    aliases = feature_aliases(model)
    target = aliases.get(name, name)
    modules = dict(model.named_modules())
    if target in modules and target != "":
        return target
    known = list(aliases) + [n for n in modules if n]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    hint = f"; close: {', '.join(close)}" if close else ""
    listed = f"; aliases: {', '.join(aliases)}" if aliases else ""
    raise UsageError(f"{type(model).__name__} has no module or feature alias {name!r}{hint}{listed}")


def tensor_version(tensor: Tensor) -> int:
    """The in-place modification counter of a tensor (PyTorch's ``_version``, which autograd checks too)."""
    return tensor._version


class FeatureRecorder:
    """Keeps the outputs of named modules of ``model`` during each forward pass.

    Features are kept only inside ``with recorder:`` (outside it the hooks return at once, so
    validation and inference pay nothing); ``pop`` then hands them over. A tapped module that runs
    twice inside one record (a shared module, a test-time-augmentation wrapper running the network
    per view) is refused,
    and so is a capture modified in place after the tap (``ReLU(inplace=True)`` after a tapped
    BatchNorm): both would hand a method something other than the feature it asked for.

    Args:
        model: Any network.
        names: Aliases or module names to tap (see ``resolve_feature``).
        detach: Keep captures without autograd history (a frozen teacher's).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], detach: bool = False) -> None:
        self.names = tuple(names)
        self.detach = detach
        self._modules = {name: resolve_feature(model, name) for name in self.names}
        self._captured: dict[str, tuple[Tensor, int]] = {}
        self._recording = False
        modules = dict(model.named_modules())
        self._handles = [modules[module_name].register_forward_hook(self._hook(name))
                         for name, module_name in self._modules.items()]

    def __enter__(self) -> "FeatureRecorder":
        self._captured, self._recording = {}, True
        return self

    def __exit__(self, *exc: object) -> None:
        self._recording = False

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def keep(module: nn.Module, args: object, output: object) -> None:
            if not self._recording:
                return
            if not isinstance(output, Tensor):
                raise UsageError(f"feature {name!r} ({self._modules[name]}) returns {type(output).__name__}, "
                                 "not a tensor; tap a module that returns one")
            if name in self._captured:
                raise UsageError(f"feature {name!r} ({self._modules[name]}) ran more than once in one forward "
                                 "pass (a shared module or a test-time-augmentation wrapper); tap another module")
            value = output.detach() if self.detach else output
            self._captured[name] = (value, tensor_version(output))
        return keep

    def pop(self) -> dict[str, Tensor]:
        """The features recorded by the last ``with recorder:`` block, by the names asked for; the record is cleared.

        Raises:
            UsageError: a tapped module did not run, or its output was modified in place after the tap.
        """
        captured, self._captured = self._captured, {}
        missing = [name for name in self.names if name not in captured]
        if missing:
            raise UsageError(f"features {', '.join(missing)} were not computed inside the last record")
        for name, (value, version) in captured.items():
            if tensor_version(value) != version:
                raise UsageError(f"feature {name!r} ({self._modules[name]}) was modified in place after it was "
                                 "captured (e.g. by ReLU(inplace=True)); tap the module after the in-place one")
        return {name: captured[name][0] for name in self.names}

    def remove(self) -> None:
        """Removes the hooks: the network runs as if never tapped."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


@torch.no_grad()
def probe_shapes(model: nn.Module, recorder: FeatureRecorder, input_shape: Sequence[int],
                 device: torch.device | None = None) -> tuple[torch.Size, dict[str, torch.Size]]:
    """Runs two zero inputs through ``model`` in eval mode: the logits' shape and each tapped feature's.

    Eval mode under ``no_grad`` leaves BatchNorm statistics and every weight as they were; the
    model's training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        device = device or (parameter.device if parameter is not None else torch.device("cpu"))
        with recorder:
            logits = model(torch.zeros(2, *input_shape, device=device))
        features = recorder.pop()
    finally:
        model.train(was_training)
    return logits.shape, {name: value.shape for name, value in features.items()}
