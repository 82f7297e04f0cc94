import os
import pickle

import pytest
import torch

from distill.checkpoint import load_checkpoint, load_trained, model_from_checkpoint
from distill.errors import UsageError
from distill.models import create_model
from distill.models import tta
from distill.train import main


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
    assert not isinstance(model, tta.TestTimeAugmented)  # test-time views are applied where a classifier is used


def test_a_network_with_other_layer_widths_loads_back(teacher_run, tmp_path):
    """A checkpoint whose layers are narrower than the registry's (a pruned network) rebuilds at its own widths."""
    ckpt = torch.load(teacher_run / "best.ckpt", weights_only=True)
    pruned = create_model("cnn_tiny", num_classes=10, in_channels=1)
    # cnn_tiny's first conv keeps 5 of its 8 channels; its BatchNorm and the next conv follow.
    features = pruned.features
    features[0] = torch.nn.Conv2d(1, 5, 3, padding=1, bias=False)
    features[1] = torch.nn.BatchNorm2d(5)
    features[4] = torch.nn.Conv2d(5, 16, 3, padding=1, bias=False)
    ckpt["state_dict"] = {f"model.{k}": v for k, v in pruned.state_dict().items()}
    path = tmp_path / "pruned.ckpt"
    torch.save(ckpt, path)
    model, _ = model_from_checkpoint(path)
    assert model.features[0].weight.shape == (5, 1, 3, 3) and model.features[1].num_features == 5
    assert model.features[4].in_channels == 5
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), pruned.eval()(x))


@pytest.mark.parametrize("suffix, shape, match", [
    ("classifier.2.weight", (10, 16, 1), r"layer model\.classifier\.2|classifier\.2 \(Linear\) has saved shapes"),
    ("num_batches_tracked", (3,), "weights do not fit cnn_tiny"),
])
def test_a_saved_shape_no_layer_can_take_is_a_one_line_error(teacher_run, tmp_path, suffix, shape, match):
    ckpt = torch.load(teacher_run / "best.ckpt", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith(suffix))
    ckpt["state_dict"][key] = torch.zeros(shape, dtype=ckpt["state_dict"][key].dtype)
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(UsageError, match=match):
        load_trained(tmp_path / "odd.ckpt")


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
