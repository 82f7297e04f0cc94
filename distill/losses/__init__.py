"""Distillation methods: one file each, a pure loss function plus a small ``Distiller`` class."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from distill.errors import UsageError
from distill.losses.base import Distiller, LabelMixedDistiller, Outputs, standardize_logits
from distill.losses.dkd import DKD, dkd_loss
from distill.losses.kd import KD, kd_loss
from distill.registry import Registry

DISTILLERS: Registry[type[Distiller]] = Registry("distillation method")
DISTILLERS.register(KD, name="kd")
DISTILLERS.register(DKD, name="dkd")


def method_arguments(name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Those of a stage's ``hparams`` that the method ``name`` takes (missing ones: its defaults)."""
    accepted = inspect.signature(DISTILLERS.get(name)).parameters
    return {key: hparams[key] for key in accepted if key in hparams}


def create_distiller(name: str, **kwargs: Any) -> Distiller:
    """The method ``name`` built with those of ``kwargs`` that are not None.

    Raises:
        UsageError: ``name`` is unknown, or a value is given that the method does not take.
    """
    method = DISTILLERS.get(name)
    given = {key: value for key, value in kwargs.items() if value is not None}
    accepted = inspect.signature(method).parameters
    unused = sorted(key for key in given if key not in accepted)
    if unused:
        raise UsageError(f"distillation method {name!r} does not take {', '.join(unused)}")
    return method(**given)


__all__ = [
    "DISTILLERS", "DKD", "Distiller", "KD", "LabelMixedDistiller", "Outputs", "create_distiller", "dkd_loss", "kd_loss",
    "method_arguments", "standardize_logits",
]
