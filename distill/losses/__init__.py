"""Distillation methods: one file each, a pure loss function plus a small ``Distiller`` class.

Add a method: write ``distill/losses/<name>.py`` like ``kd.py`` and register its class here (or,
from your own code, call ``DISTILLERS.register(MyMethod, name="mine")`` before ``distill.train.main``).
"""

from __future__ import annotations

from distill.losses.at import AT, at_loss
from distill.losses.base import Distiller, LabelMixedDistiller, Outputs, standardize_logits
from distill.losses.crd import CRD, contrastive_loss
from distill.losses.dist import DIST, dist_loss
from distill.losses.dkd import DKD, dkd_loss
from distill.losses.fitnet import FitNet, hint_loss
from distill.losses.kd import KD, kd_loss
from distill.losses.regression_kd import RegressionKD, regression_kd_loss
from distill.registry import Registry

DISTILLERS: Registry[type[Distiller]] = Registry("distillation method")
DISTILLERS.register(KD, name="kd")
DISTILLERS.register(DKD, name="dkd")
DISTILLERS.register(FitNet, name="fitnet")
DISTILLERS.register(AT, name="at")
DISTILLERS.register(CRD, name="crd")
DISTILLERS.register(DIST, name="dist")
DISTILLERS.register(RegressionKD, name="regression_kd")


def method_name(method: Distiller) -> str:
    """The registry name of a method object (its class's import path if it is not registered)."""
    return DISTILLERS.name_of(method) or f"{type(method).__module__}.{type(method).__qualname__}"


__all__ = [
    "AT", "CRD", "DIST", "DISTILLERS", "DKD", "Distiller", "FitNet", "KD", "LabelMixedDistiller", "Outputs", "RegressionKD",
    "at_loss", "contrastive_loss", "dist_loss", "dkd_loss", "hint_loss", "kd_loss", "method_name",
    "regression_kd_loss", "standardize_logits",
]
