"""A teacher from anywhere: torchvision, the registry, the user's own factory, a program; its adapters and bad input."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from distill.errors import UsageError
from distill.models import count_parameters, create_model
from distill.models.teacher_view import TeacherView
from distill.teacher.sources import load_teacher, load_weights
from distill.train import main
from tests.test_image_folder import QUIET, make_folder


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("grey") / "images", train_per_class=12, test_per_class=4, grey=True)


def folder_args(folder) -> list[str]:
    return ["--data.dataset", "image_folder", "--data.root", str(folder), "--data.grayscale", "true",
            "--data.image_size", "16", "--data.batch_size", "16", "--data.val_fraction", "0.25", *QUIET]


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """A package of the user's own: a factory whose network returns a dict of outputs."""
    root = tmp_path_factory.mktemp("user_code")
    (root / "my_teachers.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class DictNet(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
                self.head = nn.Linear(8, num_classes)

            def forward(self, x):
                features = self.body(x)
                return {"features": features, "logits": self.head(features)}

        def build(num_classes=10):
            return DictNet(num_classes)
    '''))
    return root


def test_a_torchvision_teacher_with_its_own_weights_teaches_grey_images_through_adapters(grey_folder, tmp_path, caplog):
    from torchvision.models import resnet18

    caplog.set_level("INFO")
    torch.manual_seed(0)
    network = resnet18(num_classes=3)
    weights = tmp_path / "resnet18.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in network.state_dict().items()}, str(weights))  # a DDP save
    args = ["student", "--model.model", "cnn_tiny", "--model.teacher", "torchvision:resnet18",
            "--model.teacher_weights", str(weights), "--model.teacher_input_size", "32",
            "--model.teacher_normalize", "imagenet", "--trainer.max_epochs", "1", *folder_args(grey_folder)]
    assert main([*args, "--run_dir", str(tmp_path / "a")]) == 0
    assert "cached logits computed" in caplog.text  # the teacher ran once per image, then never
    caplog.clear()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["teacher"] == "torchvision:resnet18" and metrics["teacher_kind"] == "torchvision"
    assert metrics["teacher_params"] == count_parameters(network) and metrics["teacher_ckpt"] is None
    assert 0.0 <= metrics["teacher_test_acc"] <= 1.0 and len(metrics["teacher_digest"]) == 64
    assert main([*args, "--run_dir", str(tmp_path / "b")]) == 0
    assert "cached logits loaded" in caplog.text  # same teacher, adapters and data: same table
    assert len(list((tmp_path / "teacher_logits").glob("*.npy"))) == 1  # kept beside the weights file
    # distill.evaluate compares it like any teacher, rebuilt from the spec typed and the student's record.
    from distill.evaluate import main as evaluate

    assert evaluate(["--teacher", "torchvision:resnet18", "--student", str(tmp_path / "a" / "best.ckpt"),
                     "--out_dir", str(tmp_path / "report"), "--latency_runs", "2"]) == 0
    teacher_row = json.loads((tmp_path / "report" / "compare.json").read_text())["models"][0]
    assert teacher_row["acc"] == pytest.approx(metrics["teacher_test_acc"])
    assert teacher_row["params"] == count_parameters(network)


def test_the_adapters_compute_what_the_teacher_was_made_for():
    torch.manual_seed(0)
    network = create_model("cnn_tiny", num_classes=4, in_channels=3).eval()
    view = TeacherView(network, input_size=20, normalize="imagenet", channels=3).eval()
    view.set_data_normalization((0.3,), (0.4,))
    grey = torch.rand(2, 1, 12, 12)  # pixels in [0, 1]
    student_ready = (grey - 0.3) / 0.4
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected_input = (torch.nn.functional.interpolate(grey.expand(-1, 3, -1, -1), size=(20, 20), mode="bilinear",
                                                      align_corners=False) - mean) / std
    with torch.no_grad():
        assert torch.allclose(view(student_ready), network(expected_input), atol=1e-5)


def test_your_own_factory_by_import_with_an_output_selector(user_code, grey_folder, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(user_code))
    assert main(["student", "--model.model", "cnn_tiny", "--model.teacher", "import:my_teachers:build",
                 "--model.teacher_kwargs", "{num_classes: 3}", "--model.teacher_output", "logits", "--trainer.max_epochs", "1", *folder_args(grey_folder),
                 "--run_dir", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["teacher"] == "import:my_teachers:build" and metrics["teacher_params"] == 8 * 9 + 8 + 8 * 3 + 3


def test_weights_load_strictly_after_wrapper_prefixes_are_stripped(tmp_path):
    source = create_model("cnn_tiny", num_classes=10, in_channels=1)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"model._orig_mod.{k}": v for k, v in source.state_dict().items()}}, path)
    target = create_model("cnn_tiny", num_classes=10, in_channels=1)
    load_weights(target, path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_a_program_teacher_loads_only_when_trusted(tmp_path):
    network = create_model("cnn_tiny", num_classes=10, in_channels=1).eval()
    path = tmp_path / "teacher.ts"
    torch.jit.save(torch.jit.trace(network, torch.zeros(1, 1, 28, 28)), str(path))
    with pytest.raises(UsageError, match="teacher_trust_code true"):
        load_teacher(str(path), 10, 1)
    loaded = load_teacher(str(path), 10, 1, trust_code=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert loaded.kind == "program" and torch.allclose(loaded.network(x), network(x))


class Payload:
    """Unpickling this runs code: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("case", ["no_module", "no_factory", "misfit", "pickle", "classes", "kind", "untrusted",
                                  "dict_outputs", "colour_teacher_for_grey"])
def test_bad_teachers_are_one_line_errors_before_anything_starts(case, user_code, grey_folder, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.syspath_prepend(str(user_code))
    wrong = tmp_path / "wrong.pt"
    torch.save(create_model("cnn_small", num_classes=3, in_channels=1).state_dict(), wrong)
    marker = tmp_path / "ran"
    payload = tmp_path / "payload.pt"
    torch.save({"weight": Payload(marker)}, payload)
    script = tmp_path / "t.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    flags, message = {
        "no_module": (["--model.teacher", "import:no_such_package.nets:build"], "no module 'no_such_package'"),
        "no_factory": (["--model.teacher", "import:my_teachers:missing"], "my_teachers has no 'missing'"),
        "misfit": (["--model.teacher", "registry:cnn_tiny", "--model.teacher_weights", str(wrong)],
                   "do not fit the network: missing "),
        "pickle": (["--model.teacher", "registry:cnn_tiny", "--model.teacher_weights", str(payload)], "refused"),
        "classes": (["--model.teacher", "registry:cnn_tiny", "--model.teacher_kwargs", "{num_classes: 7}"],
                    "returns (2, 7) for 2 inputs, expected (2, 3)"),
        "kind": (["--model.teacher", "hub:resnet18"], "unknown teacher kind 'hub'"),
        "untrusted": (["--model.teacher", str(script)], "teacher_trust_code true"),
        "dict_outputs": (["--model.teacher", "import:my_teachers:build"], "pick them with --model.teacher_output"),
        "colour_teacher_for_grey": (["--model.teacher", "registry:cnn_tiny", "--model.teacher_kwargs",
                                     "{in_channels: 2}"], "takes 2-channel images but the data has 1 channel"),
    }[case]
    run_dir = tmp_path / "run"
    code = main(["student", "--model.model", "cnn_tiny", *flags, *folder_args(grey_folder), "--run_dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists() and not (run_dir / "config.yaml").exists()
