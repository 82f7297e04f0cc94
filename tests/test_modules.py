import csv
import dataclasses

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger

from distill.checkpoint import load_checkpoint
from distill.data import ImageDataModule
from distill.errors import UsageError
from distill.losses import KD
from distill.modules import DistillModule, TeacherModule
from distill.modules.classifier import logs_this_step
from tests.conftest import needs_fashion_mnist


def make_student(teacher_ckpt, **kwargs) -> DistillModule:
    return DistillModule(model="cnn_tiny", teacher_ckpt=str(teacher_ckpt), num_classes=10, input_shape=(1, 28, 28),
                         **kwargs)


def test_teacher_is_frozen_through_a_training_step(teacher_run):
    module = make_student(teacher_run / "best.ckpt", method=KD(alpha=0.9))
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    module.train()
    assert module.model.training and not module.teacher.training
    assert not any(p.requires_grad for p in module.teacher.parameters())
    opt = torch.optim.SGD(module.trainable_module().parameters(), lr=0.5)
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    logits, terms = module.training_losses(images, labels, torch.arange(8))
    sum(terms.values()).backward()
    opt.step()
    assert set(terms) == {"kd", "ce"}
    assert all(p.grad is None for p in module.teacher.parameters())
    assert not module.teacher.training
    after = module.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched too
    assert any(p.grad is not None for p in module.model.parameters())


def test_student_checkpoint_holds_no_teacher_weights(teacher_run):
    module = make_student(teacher_run / "best.ckpt")
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)  # resuming puts the teacher back for strict loading
    module.load_state_dict(checkpoint["state_dict"], strict=True)


def test_teacher_with_other_class_count_is_refused(teacher_run):
    path = teacher_run / "best.ckpt"
    with pytest.raises(UsageError, match=rf"teacher {path} predicts 10 classes but the data has 100"):
        DistillModule(model="cnn_tiny", teacher_ckpt=str(path), num_classes=100, input_shape=(1, 28, 28))


def test_teacher_with_other_input_shape_is_refused(teacher_run):
    path = teacher_run / "best.ckpt"
    with pytest.raises(UsageError, match=r"takes inputs of shape \(1, 28, 28\) but the data has \(3, 32, 32\)"):
        DistillModule(model="cnn_tiny", teacher_ckpt=str(path), num_classes=10, input_shape=(3, 32, 32))


def test_missing_teacher_names_the_file(tmp_path):
    with pytest.raises(UsageError, match=f"checkpoint {tmp_path / 'none.ckpt'} not found"):
        make_student(tmp_path / "none.ckpt")


def test_teacher_checkpoint_is_plain_and_loads_weights_only(teacher_run):
    ckpt = load_checkpoint(teacher_run / "best.ckpt")
    hp = ckpt["hyper_parameters"]
    assert hp["model"] == "cnn_tiny" and hp["num_classes"] == 10 and tuple(hp["input_shape"]) == (1, 28, 28)
    assert all(isinstance(v, (str, int, float, bool, tuple, list, dict, type(None))) for v in hp.values())


def test_student_hyperparameters_hold_the_method_as_plain_values(teacher_run):
    module = make_student(teacher_run / "best.ckpt", method=KD(temperature=3.0, alpha=0.4))
    assert module.hparams["method"] == "kd"
    assert module.hparams["method_settings"] == {"temperature": 3.0, "alpha": 0.4, "logit_standardize": False}
    assert not any(isinstance(v, torch.nn.Module) for v in module.hparams.values())
    assert make_student(teacher_run / "best.ckpt").distiller.settings() == KD().settings()  # None: KD's own defaults


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": 0.0}, "lr must be > 0"),
    ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
    ({"scheduler": "zigzag"}, "unknown scheduler 'zigzag'"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
])
def test_bad_hyperparameters_fail_at_construction(kwargs, match):
    with pytest.raises(UsageError, match=match):
        TeacherModule(model="cnn_tiny", **kwargs)


def test_mirrored_teacher_views_are_refused_where_a_mirror_changes_the_class(teacher_run, tmp_path):
    data = ImageDataModule(batch_size=32)
    data.source.info = dataclasses.replace(data.info, hflip=False)  # e.g. digits or text
    module = make_student(teacher_run / "best.ckpt", teacher_tta="flip")
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(UsageError, match="teacher_tta=flip: a mirrored input of this data does not keep its class"):
        trainer.fit(module, datamodule=data)


def test_forward_is_inference_only():
    module = TeacherModule(model="cnn_tiny").eval()
    with torch.no_grad():
        assert module(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_bf16_teacher_gives_close_float32_logits(teacher_run):
    exact = make_student(teacher_run / "best.ckpt")
    fast = make_student(teacher_run / "best.ckpt", teacher_bf16=True)
    images = torch.randn(16, 1, 28, 28)
    a, b = exact.teacher_outputs(images).logits, fast.teacher_outputs(images).logits
    assert b.dtype == torch.float32 and not b.requires_grad
    assert torch.allclose(a, b, atol=0.1, rtol=0.05)


def test_compile_keeps_checkpoint_keys():
    plain = TeacherModule(model="cnn_tiny")
    compiled = TeacherModule(model="cnn_tiny", compile=True)
    assert list(plain.state_dict()) == list(compiled.state_dict())


@needs_fashion_mnist
def test_logs_this_step_agrees_with_lightnings_own_rule_on_every_step(tmp_path):
    # logs_this_step reads public Trainer state only; Lightning's private answer is its reference. If
    # Lightning renames the private attribute, this test fails loudly rather than drifting silently.
    class Compare(Callback):
        def __init__(self):
            self.pairs = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.pairs.append((logs_this_step(trainer), trainer._logger_connector.should_update_logs))

    compare = Compare()
    trainer = Trainer(max_steps=7, log_every_n_steps=3, limit_val_batches=0, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[compare], logger=False)
    trainer.fit(TeacherModule(model="cnn_tiny"), datamodule=ImageDataModule(batch_size=32))
    assert len(compare.pairs) == 7 and all(ours == theirs for ours, theirs in compare.pairs)
    assert [ours for ours, _ in compare.pairs] == [False, False, True, False, False, True, False]


@needs_fashion_mnist
def test_logged_training_loss_is_the_mean_since_the_last_logged_step(tmp_path):
    class StepLosses(Callback):
        def __init__(self):
            self.losses = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    data = ImageDataModule(batch_size=32, eval_batch_size=256)
    steps = StepLosses()
    trainer = Trainer(max_steps=6, log_every_n_steps=3, limit_val_batches=0, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[steps],
                      logger=CSVLogger(str(tmp_path), name="", version=""))
    trainer.fit(TeacherModule(model="cnn_tiny", lr=0.05), datamodule=data)
    rows = [r for r in csv.DictReader(open(tmp_path / "metrics.csv")) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [2, 5]  # Lightning writes the logs every 3rd step
    for row, first in zip(rows, (0, 3)):
        expected = sum(steps.losses[first:first + 3]) / 3
        assert float(row["train/loss"]) == pytest.approx(expected, rel=1e-5)
        assert float(row["train/loss_ce"]) == pytest.approx(expected, rel=1e-5)  # the only term


@needs_fashion_mnist
def test_epoch_training_accuracy_counts_every_training_batch(tmp_path):
    class Batches(Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append((batch[0].clone(), batch[1].clone()))

    data = ImageDataModule(batch_size=32, eval_batch_size=256)
    batches = Batches()
    # No BatchNorm or dropout and a vanishing learning rate: the network is the same function at every step.
    module = TeacherModule(model="cnn_tiny", model_kwargs={"bn": False}, lr=1e-12, weight_decay=0.0)
    trainer = Trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[batches])
    trainer.fit(module, datamodule=data)
    with torch.no_grad():
        correct = sum(int((module.model(images).argmax(1) == labels).sum()) for images, labels in batches.seen)
    assert len(batches.seen) == 5
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(correct / (5 * 32))
