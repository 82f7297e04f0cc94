"""Architectures, teacher or student, behind one registry.

>>> from distill.models import create_model, list_models
>>> model = create_model("resnet8x4", num_classes=100)
"""

from typing import TYPE_CHECKING

from torch import nn

from distill.models import cifar_resnet, cnn, mlp, trees, tv_resnet, vgg, wrn  # noqa: F401  (registers the factories)
from distill.models._registry import create_model, list_models, register_model
from distill.models.target_scale import TargetScale

__all__ = ["create_model", "list_models", "register_model", "count_parameters", "object_name", "NetworkOrName",
           "TargetScale"]

if TYPE_CHECKING:
    NetworkOrName = str | nn.Module
else:
    # A network argument takes a name on the command line and, from Python, also an nn.Module. The
    # command line reads the runtime annotation: str alone, since an nn.Module type would make its
    # --help list every Module subclass and their arguments.
    NetworkOrName = str


def count_parameters(model) -> int:  # type: ignore[no-untyped-def]
    """Number of parameters of ``model`` (trainable or not), and of the numbers its fitted parts hold
    outside parameters (a tree ensemble's thresholds and leaf values: ``stored_values``)."""
    return sum(p.numel() for p in model.parameters()) + sum(getattr(m, "stored_values", 0) for m in model.modules())


def object_name(network) -> str:  # type: ignore[no-untyped-def]
    """``object:<module>.<class>``: how a network passed as an object (not a registry name) is recorded."""
    return f"object:{type(network).__module__}.{type(network).__qualname__}"
