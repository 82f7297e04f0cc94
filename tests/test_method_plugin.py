"""A new distillation method is one class and one registration: proved from outside the package.

``ScaledCE`` lives in this test file, is registered here, and trains through the real CLI with its
own setting; it also reads a student feature and owns a learnable part sized by the probe.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses import DISTILLERS, Distiller, Outputs
from distill.train import main
from tests.conftest import FAST, needs_fashion_mnist


class ScaledCE(Distiller):
    """Cross-entropy times ``weight``, plus a penultimate-feature probe head (a toy, for the tests).

    Args:
        weight: Factor of the cross-entropy.
    """

    student_features = ("penultimate",)

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight
        self.head: nn.Module | None = None

    def build(self, student: dict[str, torch.Size], teacher: dict[str, torch.Size]) -> None:
        self.head = nn.Linear(student["penultimate"][1], student["logits"][1])

    @property
    def needs_teacher(self) -> bool:
        return False

    def forward(self, student: Outputs, teacher: Outputs | None, labels: Tensor) -> dict[str, Tensor]:
        assert self.head is not None
        probe = F.cross_entropy(self.head(student.features["penultimate"].flatten(1)), labels)
        return {"ce": self.weight * F.cross_entropy(student.logits, labels), "probe": probe}


@needs_fashion_mnist
def test_a_method_registered_outside_the_package_trains_through_the_cli(teacher_run, tmp_path):
    DISTILLERS.register(ScaledCE, name="scaled_ce")
    try:
        run_dir = tmp_path / "toy"
        code = main(["student", "--model.model", "cnn_tiny", "--model.teacher_ckpt", str(teacher_run / "best.ckpt"),
                     "--model.method", "scaled_ce", "--model.method.weight", "0.5", "--run_dir", str(run_dir), *FAST])
        assert code == 0
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["method"] == "scaled_ce" and metrics["method_settings"] == {"weight": 0.5}
        state = torch.load(run_dir / "best.ckpt", weights_only=True)["state_dict"]
        # The learnable part the method built from the probed shapes is trained and checkpointed.
        assert state["distiller.head.weight"].shape == (10, 16)  # cnn_tiny: 16 pooled channels -> 10 classes
        assert code == main(["student", "--model.model", "cnn_tiny", "--model.teacher_ckpt",
                             str(teacher_run / "best.ckpt"), "--model.method", "scaled_ce", "--run_dir",
                             str(run_dir), "--ckpt_path", "last", "--trainer.max_epochs", "2",
                             *FAST[2:]])  # strict resume with the method's parts
    finally:
        DISTILLERS.unregister("scaled_ce")
