"""Distillation methods: one file each, a pure loss function plus a small ``Distiller`` class."""

from distill.losses.base import Distiller, Outputs
from distill.losses.kd import KD, kd_loss
from distill.registry import Registry

DISTILLERS: Registry[type[Distiller]] = Registry("distillation method")
DISTILLERS.register(KD, name="kd")

__all__ = ["DISTILLERS", "Distiller", "KD", "Outputs", "kd_loss"]
