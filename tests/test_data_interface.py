"""A second kind of data is one DataModule answering DistillData and one registration: proved from outside.

``Blobs`` (8x8 single-channel inputs of three Gaussian classes, made here) is registered from this
file, then a teacher and a cached-logit student train on it through the real CLI and
``distill.evaluate`` rebuilds it from the checkpoints, with no change to the package.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from distill.data import DATA_MODULES, DistillData
from distill.data.interface import check_data
from distill.errors import UsageError
from distill.evaluate import main as evaluate_main
from distill.train import main

FAST = ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
        "false", "--trainer.logger", "false"]


class Blobs(LightningDataModule):
    """Three classes of 8x8 inputs: noise around a per-class mean image.

    Args:
        samples: Training samples (the test split has a quarter as many).
        batch_size: Training batch size.
        seed: Seed of the data.
    """

    def __init__(self, samples: int = 600, batch_size: int = 50, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        g = torch.Generator().manual_seed(seed)
        means = torch.randn(3, 1, 8, 8, generator=g)
        def split(n):  # noqa: E306
            labels = torch.randint(0, 3, (n,), generator=g)
            return means[labels] + 0.8 * torch.randn(n, 1, 8, 8, generator=g), labels
        self.train_x, self.train_y = split(samples)
        self.test_x, self.test_y = split(samples // 4)
        self._batch_size = batch_size

    batch_size = property(lambda self: self._batch_size)
    num_classes = property(lambda self: 3)
    class_names = property(lambda self: ("a", "b", "c"))
    input_shape = property(lambda self: (1, 8, 8))
    mirror_keeps_class = property(lambda self: False)
    border_fill = property(lambda self: None)

    def random_transforms(self) -> frozenset[str]:
        return frozenset()

    def fingerprint(self) -> str:
        return hashlib.sha256(self.train_x.numpy().tobytes()).hexdigest()

    def num_training_samples(self) -> int:
        return len(self.train_y)

    def _batches(self, x, y, batch_size, shuffle):
        idx = torch.arange(len(y))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)) if shuffle else idx
        return DataLoader([(x[i], y[i], i) for i in order.tolist()], batch_size=batch_size)

    def train_dataloader(self):
        return self._batches(self.train_x[:500], self.train_y[:500], self._batch_size, True)

    def val_dataloader(self):
        return self._batches(self.train_x[500:], self.train_y[500:], 100, False)

    def test_dataloader(self):
        return self._batches(self.test_x, self.test_y, 100, False)

    def training_inputs(self):
        for start in range(0, len(self.train_y), 100):
            idx = torch.arange(start, min(start + 100, len(self.train_y)))
            yield self.train_x[idx], idx

    def test_batches(self):
        for x, y, _ in self.test_dataloader():
            yield x, y


@pytest.fixture
def blobs_registered():
    DATA_MODULES.register(Blobs, name="blobs")
    yield
    DATA_MODULES.unregister("blobs")


def test_blobs_answers_the_interface():
    assert isinstance(Blobs(), DistillData)
    check_data(Blobs())
    with pytest.raises(UsageError, match="LightningDataModule lacks batch_size, border_fill"):
        check_data(LightningDataModule())


def test_another_data_module_trains_both_stages_caches_and_evaluates(blobs_registered, tmp_path):
    teacher, student = tmp_path / "t", tmp_path / "s"
    assert main(["teacher", "--data", "blobs", "--model.model", "cnn_small", "--run_dir", str(teacher), *FAST]) == 0
    assert main(["student", "--data", "blobs", "--model.model", "cnn_tiny", "--model.teacher_ckpt",
                 str(teacher / "best.ckpt"), "--run_dir", str(student), *FAST]) == 0
    assert len(list((teacher / "teacher_logits").glob("*.npy"))) == 1  # the cache, keyed by Blobs' fingerprint
    metrics = json.loads((teacher / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.6  # three well-separated classes: learnt, not guessed
    assert torch.load(student / "best.ckpt", weights_only=True)["data_module"] == "blobs"
    out = tmp_path / "report"
    assert evaluate_main(["--teacher", str(teacher / "best.ckpt"), "--student", str(student / "best.ckpt"),
                          "--out_dir", str(out), "--latency_runs", "1"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["classes"] == ["a", "b", "c"] and report["models"][0]["test_samples"] == 150
    assert report["models"][0]["acc"] == pytest.approx(metrics["test/acc"])
