"""distill: knowledge distillation and model compression for PyTorch, on Lightning.

The Python API, for your own ``Trainer`` and ``LightningDataModule``::

    from distill import DistillModule
    from distill.losses import KD
    system = DistillModule(model=my_student, teacher=my_teacher, method=KD(temperature=4.0),
                           num_classes=10, input_shape=(3, 32, 32))
    lightning.pytorch.Trainer(max_epochs=10).fit(system, datamodule=my_data)

Names are imported on first use, so ``import distill`` alone loads nothing heavy. Classes that
configuration files name (methods, DataModules) are imported from their own packages, where
configurations written by the command line name them too.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DistillModule": "distill.modules",
    "TeacherModule": "distill.modules",
    "PruneModule": "distill.modules",
    "create_model": "distill.models",
    "list_models": "distill.models",
    "register_model": "distill.models",
    "load_network": "distill.checkpoint",
    "load_trained": "distill.checkpoint",
    "build_teacher": "distill.teacher",
    "TeacherSettings": "distill.teacher",
    "get_task": "distill.tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
