import json
import os
import pickle

import pytest
import torch

from distill.checkpoint import load_checkpoint, load_trained, model_from_checkpoint
from distill.data import ImageDataModule
from distill.errors import UsageError
from distill.models import create_model
from distill.models.tta import TestTimeAugmented
from distill.train import main
from tests.conftest import fast


class Payload:
    """Unpickling this would run ``os.system``; weights-only loading must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(teacher_run, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = torch.load(teacher_run / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["evil"] = Payload(str(marker))
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(UsageError, match=f"checkpoint {bad} refused"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_pickle_payload_as_teacher_is_a_one_line_error(teacher_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = torch.load(teacher_run / "best.ckpt", weights_only=True)
    ckpt["state_dict"]["model.features.0.weight"] = Payload(str(marker))
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    code = main(["student", "--model.teacher_ckpt", str(bad), "--run_dir", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: checkpoint") and "refused" in err and "\n" not in err
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(teacher_run, tmp_path):
    data = (teacher_run / "best.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated or corrupt"):
        load_checkpoint(cut)


def test_foreign_file_is_not_a_distill_checkpoint(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(UsageError, match="not a distill checkpoint"):
        load_checkpoint(other)


def test_model_from_checkpoint_rebuilds_the_network(teacher_run):
    model, hparams = model_from_checkpoint(teacher_run / "best.ckpt")
    assert hparams["model"] == "cnn_tiny" and not model.training
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert not isinstance(model, TestTimeAugmented)


def test_stage_with_test_time_augmentation_is_evaluated_and_reloaded_with_it(tmp_path):
    run_dir = tmp_path / "t"
    assert main(["teacher", "--model.model", "cnn_tiny", "--model.tta", "flip", "--run_dir", str(run_dir),
                 *fast(limit_test_batches="1", eval_batch_size="64")]) == 0
    model, hparams = model_from_checkpoint(run_dir / "best.ckpt")
    assert hparams["tta"] == "flip" and isinstance(model, TestTimeAugmented)
    trained = load_trained(run_dir / "best.ckpt")  # its network is what gets exported: the plain network's keys
    assert trained.network is trained.model.model
    assert set(trained.network.state_dict()) == set(create_model("cnn_tiny", num_classes=10).state_dict())
    # The stage's own test accuracy is the flip-averaged classifier's, on the first 64 test images.
    data = ImageDataModule()
    data.setup("test")
    images, labels, _ = next(iter(data.test_dataloader()))
    images = data.transform(images[:64], train=False)
    with torch.no_grad():
        acc = (model(images).argmax(1) == labels[:64]).float().mean().item()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(acc, abs=1e-6)


def test_atomic_checkpoint_io_replaces_whole_files(tmp_path, monkeypatch):
    from distill.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.ones(2))

    def dies_mid_write(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt  # stands for a kill during the save

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind
