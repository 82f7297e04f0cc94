"""Architectures, teacher or student, behind one registry.

>>> from distill.models import create_model, list_models
>>> model = create_model("resnet8x4", num_classes=100)
"""

from distill.models import cifar_resnet, cnn, tv_resnet, vgg, wrn  # noqa: F401  (registers the factories)
from distill.models._registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "count_parameters"]


def count_parameters(model) -> int:  # type: ignore[no-untyped-def]
    """Number of parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
