"""The Python API as the README shows it: your own networks and data, your own Trainer."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import distill
from distill.errors import UsageError


class ToyData(pl.LightningDataModule):
    """A user's DataModule: plain (inputs, labels) batches, nothing of distill's interface."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(256, 1, 28, 28, generator=generator)
        self.labels = (self.inputs.mean(dim=(1, 2, 3)) > 0).long() + 2 * (self.inputs[:, 0, 0, 0] > 0).long()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.inputs, self.labels), batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.inputs[:64], self.labels[:64]), batch_size=64)


def test_your_own_teacher_object_distills_into_a_registry_student_with_your_trainer(tmp_path):
    from distill import DistillModule
    from distill.losses import KD

    teacher = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 4))  # yours, trained
    system = DistillModule(model="cnn_tiny", teacher=teacher, method=KD(temperature=4.0, alpha=0.9),
                           num_classes=4, input_shape=(1, 28, 28))
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    before = [p.detach().clone() for p in system.model.parameters()]
    trainer.fit(system, datamodule=ToyData())
    assert trainer.global_step == 16
    assert any(not torch.equal(a, b) for a, b in zip(before, system.model.parameters()))  # the student learned
    assert all(p.requires_grad is False for p in teacher.parameters())  # the teacher stayed frozen
    assert system.hparams["teacher"] == "object:torch.nn.modules.container.Sequential"
    assert all(not isinstance(v, nn.Module) for v in system.hparams.values())  # objects are not hyperparameters
    trainer.save_checkpoint(tmp_path / "student.ckpt", weights_only=True)
    network = distill.load_network(distill.create_model("cnn_tiny", num_classes=4, in_channels=1), tmp_path / "student.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), system.model.state_dict().values()))


def test_a_system_built_with_other_settings_than_its_data_is_refused_before_training(tmp_path):
    """The command line links task, outputs, input shape and target scale from the data; from Python a
    regression student without the data's target scale would learn the targets unscaled, with no word."""
    from distill import TeacherModule
    from distill.data import TabularDataModule
    from tests.test_trees import regression_table

    data = TabularDataModule(path=str(regression_table(tmp_path / "r.csv")), target="y")
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    system = TeacherModule(model="mlp_small", num_classes=1, input_shape=data.input_shape, task="regression")
    with pytest.raises(UsageError, match=r"target_scale=None\) does not fit the data, whose target_scale is \("):
        trainer.fit(system, datamodule=data)
    with pytest.raises(UsageError, match="a classifier scores at least 2 classes, got num_classes=1"):
        TeacherModule(model="mlp_small", num_classes=1, input_shape=data.input_shape)
    fitting = TeacherModule(model="mlp_small", num_classes=1, input_shape=data.input_shape, task="regression",
                            target_scale=data.target_scale)
    trainer.fit(fitting, datamodule=data)
    assert trainer.global_step > 0


def test_a_student_object_is_trained_in_place_and_its_checkpoint_says_how_to_load_it(tmp_path):
    from distill import DistillModule

    student = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    teacher = distill.create_model("cnn_small", num_classes=4, in_channels=1)
    system = DistillModule(model=student, teacher=teacher, num_classes=4, input_shape=(1, 28, 28))
    assert system.model is student and system.hparams["model"].startswith("object:")
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(system, datamodule=ToyData())
    trainer.save_checkpoint(tmp_path / "s.ckpt", weights_only=True)
    with pytest.raises(UsageError, match="distill.load_network"):
        distill.load_trained(tmp_path / "s.ckpt")


def test_import_distill_alone_loads_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, distill; print('lightning' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
