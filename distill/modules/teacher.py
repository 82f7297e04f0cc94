"""Stage one: supervised training of the teacher."""

from __future__ import annotations

from typing import Any

from distill.models import NetworkOrName
from distill.modules.classifier import ClassifierSystem


class TeacherModule(ClassifierSystem):
    """Trains a network with cross-entropy (optionally label-smoothed) and the full optimization toolkit.

    Args:
        model: Architecture name from the registry (``distill.models.list_models()``); from Python,
            also an ``nn.Module``.
        **kwargs: Everything ``ClassifierSystem`` takes (optimizer, schedule, regularization, ...).
    """

    def __init__(self, model: NetworkOrName, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
