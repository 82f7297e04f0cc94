"""The optimization toolkit through the real stages: LR range test, early stopping, clipping, AMP."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Trainer

from distill.data import ImageDataModule
from distill.modules import TeacherModule
from distill.train import bare_flag_values, main
from tests.conftest import FAST, fast, needs_fashion_mnist

pytestmark = needs_fashion_mnist


def test_bare_lr_find_means_show():
    assert bare_flag_values(["--lr_find"]) == ["--lr_find", "show"]
    assert bare_flag_values(["--lr_find", "--x", "1"]) == ["--lr_find", "show", "--x", "1"]
    assert bare_flag_values(["--lr_find", "apply"]) == ["--lr_find", "apply"]


def test_lr_find_writes_its_plot_and_stops(tmp_path, capsys):
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path), "--lr_find", *fast(limit_train_batches="100")])
    assert code == 0
    png = (tmp_path / "lr_find.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert "suggested learning rate" in capsys.readouterr().out
    assert not (tmp_path / "metrics.json").exists()  # show: no training


def test_lr_find_apply_trains_with_the_suggestion(tmp_path):
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path), "--lr_find", "apply",
                 *fast(limit_train_batches="100")])
    assert code == 0
    ckpt = torch.load(tmp_path / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["lr"] != 3e-3  # the default was replaced by the suggestion
    assert (tmp_path / "lr_find.png").is_file()


def test_early_stopping_stops_before_max_epochs(tmp_path):
    args = fast(max_epochs="30")
    # lr so small that val/acc cannot improve: patience 1 must stop it after 2 epochs.
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path), "--model.lr", "1e-12",
                 "--model.scheduler", "constant", "--early_stopping_patience", "1", *args])
    assert code == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] < 5


class RecordsClippedNorm(TeacherModule):
    """Records the total gradient norm right after Lightning's clipping."""

    clipped_norms: list[float]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad.norm() for p in self.model.parameters() if p.grad is not None]
        self.clipped_norms = [*getattr(self, "clipped_norms", []), torch.stack(grads).norm().item()]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_gradient_clipping_bounds_the_norm(tmp_path, precision):
    module = RecordsClippedNorm(model="cnn_tiny", lr=1.0, optimizer="sgd", scheduler="constant")
    data = ImageDataModule(batch_size=64)
    trainer = Trainer(max_steps=5, gradient_clip_val=0.01, gradient_clip_algorithm="norm", precision=precision,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    assert len(module.clipped_norms) == 5
    assert max(module.clipped_norms) <= 0.01 * 1.01


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_bf16_mixed_precision_runs_a_stage(tmp_path, optimizer):
    code = main(["teacher", "--model.model", "cnn_tiny", "--model.optimizer", optimizer, "--run_dir", str(tmp_path),
                 "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "1.0", *FAST])
    assert code == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] >= 0.0


def test_l2_term_is_logged_and_schedules_run_through_the_stage(tmp_path):
    args = fast(logger=None)
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path), "--model.l2", "1e-3",
                 "--model.optimizer", "sgd", "--model.nesterov", "true", "--model.scheduler", "plateau",
                 "--model.warmup_steps", "2", "--trainer.log_every_n_steps", "1", *args])
    assert code == 0
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_l2", "train/loss_ce", "train/grad_norm"} <= set(header)
    assert any(h.startswith("lr") for h in header)  # one column per parameter group: lr/pg1, lr/pg2


@pytest.fixture(scope="module")
def small_data():
    data = ImageDataModule(batch_size=32, eval_batch_size=256)
    data.setup("fit")
    return data


def one_step(module, data, tmp_path):
    trainer = Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer.fit(module, datamodule=data)
    assert any(not torch.equal(b, p) for b, p in zip(before, module.model.parameters()))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adamax", "adagrad", "adadelta", "rmsprop"])
def test_every_optimizer_trains_from_its_config(optimizer, small_data, tmp_path):
    one_step(TeacherModule(model="cnn_tiny", optimizer=optimizer, lr=0.05, weight_decay=1e-4), small_data, tmp_path)


@pytest.mark.parametrize("scheduler", ["constant", "cosine", "step", "multistep", "exponential", "polynomial",
                                       "onecycle", "plateau"])
def test_every_schedule_trains_from_its_config(scheduler, small_data, tmp_path):
    one_step(TeacherModule(model="cnn_tiny", scheduler=scheduler, warmup_steps=1), small_data, tmp_path)


def test_compiled_stage_trains_and_saves_plain_keys(tmp_path):
    code = main(["teacher", "--model.model", "cnn_tiny", "--model.compile", "true", "--run_dir", str(tmp_path),
                 *fast(max_epochs=None), "--trainer.max_steps", "3"])
    assert code == 0
    keys = torch.load(tmp_path / "best.ckpt", weights_only=True)["state_dict"]
    assert keys and not any("_orig_mod" in k for k in keys)


def test_linear_lr_scaling_to_the_effective_batch(tmp_path, capsys):
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path), "--model.lr", "0.01",
                 "--scale_lr_base_batch", "16", "--trainer.accumulate_grad_batches", "2", *FAST])
    assert code == 0
    hp = torch.load(tmp_path / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["lr"] == pytest.approx(0.01 * (32 * 2) / 16)  # batch 32 x 1 device x 2 accumulation
