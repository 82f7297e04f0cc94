"""The architecture registry: every teacher and student is built by ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from distill.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: registers an architecture factory under its function name."""
    return MODELS.register(factory)


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: object) -> nn.Module:
    """Builds a registered architecture.

    Args:
        name: Registry key, e.g. ``"resnet8x4"`` (see ``list_models()``).
        num_classes: Width of the output logits.
        in_channels: Channels of the input images (1 for Fashion-MNIST, 3 for CIFAR).
        **kwargs: Architecture options such as ``bn`` or ``dropout`` where the factory takes them.

    Raises:
        UsageError: ``name`` is not registered, or an option is not one the factory takes.
    """
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as err:
        from distill.errors import UsageError

        raise UsageError(f"model {name!r} does not take these options {sorted(kwargs)}: {err}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered architectures matching a shell-style ``pattern``."""
    return MODELS.names(pattern)
