"""Your own images in folders, end to end through the real CLI: train, distill, evaluate, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.checkpoint import load_trained
from distill.data import ImageDataModule
from distill.train import main

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false", "--data.num_workers", "0"]


def make_folder(root, train_per_class: int, test_per_class: int = 8, side: int = 20, grey: bool = False):
    """Three classes told apart by brightness: dark, middle, bright (with noise), as PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for level, name in ((40, "dark"), (128, "middle"), (215, "bright")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(rng.normal(level, 25, (side, side, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels).convert("L" if grey else "RGB")
                image.save(root / split / name / f"{i}.png")
    return root


def test_a_folder_smaller_than_one_batch_trains_and_distills_end_to_end(tmp_path):
    folder = make_folder(tmp_path / "images", train_per_class=24)  # 72 training images, batch 128
    data = ["--data.dataset", "image_folder", "--data.root", str(folder), "--data.image_size", "16",
            "--data.val_fraction", "0.25", "--data.batch_size", "128", "--data.eval_batch_size", "64"]
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    assert main(["teacher", "--model.model", "cnn_small", "--trainer.max_epochs", "8", "--model.lr", "0.01",
                 *data, *QUIET, "--run_dir", str(teacher_dir)]) == 0
    metrics = json.loads((teacher_dir / "metrics.json").read_text())
    assert metrics["steps"] == 8  # the only, incomplete batch is trained on, once per epoch
    assert metrics["test/acc"] > 0.6  # three brightness levels: far above chance (1/3)
    saved = load_trained(teacher_dir / "best.ckpt")
    mean, std = saved.data_hparams["mean"], saved.data_hparams["std"]
    assert len(mean) == 3 and 0.2 < mean[0] < 0.7 and all(s > 0 for s in std)  # computed from the training split
    assert main(["student", "--model.model", "cnn_tiny", "--model.teacher", str(teacher_dir / "best.ckpt"),
                 "--trainer.max_epochs", "2", *data, *QUIET, "--run_dir", str(student_dir)]) == 0
    student = json.loads((student_dir / "metrics.json").read_text())
    assert student["steps"] == 2 and student["teacher_test_acc"] == pytest.approx(metrics["test/acc"])
    # A student whose images are normalized otherwise: the teacher still reads them as it was trained
    # (before, it read the student's normalization and its figure in the student's metrics was not its own).
    other = student_dir.parent / "student_other"
    assert main(["student", "--model.model", "cnn_tiny", "--model.teacher", str(teacher_dir / "best.ckpt"),
                 "--trainer.max_epochs", "1", *data, "--data.mean", "[0.9, 0.1, 0.5]", "--data.std",
                 "[0.05, 0.5, 0.2]", *QUIET, "--run_dir", str(other)]) == 0
    assert json.loads((other / "metrics.json").read_text())["teacher_test_acc"] == pytest.approx(metrics["test/acc"])
    # The report scores each network on the test images as it was trained to read them.
    from distill.evaluate import main as evaluate

    assert evaluate(["--teacher", str(teacher_dir / "best.ckpt"), "--student", str(other / "best.ckpt"),
                     "--out_dir", str(tmp_path / "report"), "--latency_runs", "1"]) == 0
    rows = json.loads((tmp_path / "report" / "compare.json").read_text())["models"]
    own = json.loads((other / "metrics.json").read_text())["test/acc"]
    assert rows[0]["acc"] == pytest.approx(metrics["test/acc"]) and rows[1]["acc"] == pytest.approx(own)
    from distill.compress import main as compress  # one test set for every artifact: refused, not misread

    assert compress(["--ckpt", str(other / "best.ckpt"), "--teacher", str(teacher_dir / "best.ckpt"),
                     "--out_dir", str(tmp_path / "c"), "--latency_runs", "3"]) == 2
    # The saved normalization is what evaluation and prediction use: no recomputation.
    rebuilt = ImageDataModule(**{k: v for k, v in saved.data_hparams.items() if k != "_class_path"})
    assert rebuilt.normalization == (tuple(mean), tuple(std))


def test_a_run_that_took_no_optimizer_step_is_an_error(tmp_path, capsys):
    folder = make_folder(tmp_path / "images", train_per_class=4, test_per_class=2)
    code = main(["teacher", "--model.model", "cnn_tiny", "--data.dataset", "image_folder", "--data.root", str(folder),
                 "--data.image_size", "16", "--trainer.limit_train_batches", "0", *QUIET,
                 "--run_dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "took no optimizer step" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_grey_folders_and_a_colour_only_teacher_are_refused_in_one_line(teacher_run, tmp_path, capsys):
    folder = make_folder(tmp_path / "colour", train_per_class=4, test_per_class=2)
    data = ImageDataModule(dataset="image_folder", root=str(folder), image_size=16, grayscale=True, num_workers=0)
    assert data.input_shape == (1, 16, 16)
    data.setup("fit")
    assert data.train_set[0][0].shape == (1, 16, 16) and len(data.normalization[0]) == 1
    # A colour teacher (3 channels) for grey data is adapted; a grey teacher for colour data cannot be.
    weights = tmp_path / "grey.pt"
    from distill.models import create_model

    torch.save(create_model("cnn_tiny", num_classes=3, in_channels=1).state_dict(), weights)
    code = main(["student", "--model.model", "cnn_tiny", "--model.teacher", "registry:cnn_tiny",
                 "--model.teacher_kwargs", "{in_channels: 1}", "--model.teacher_weights", str(weights),
                 "--data.dataset", "image_folder", "--data.root", str(folder), "--data.image_size", "16", *QUIET,
                 "--run_dir", str(tmp_path / "run")])
    assert code == 2
    assert "takes 1-channel images but the data has 3 channels" in capsys.readouterr().err


def test_a_16_bit_greyscale_png_reads_as_its_8_bit_picture_not_white(tmp_path):
    import numpy as np
    from PIL import Image

    from distill.data.sources import open_image

    levels = np.arange(0, 256, dtype=np.uint16).reshape(16, 16)  # every 8-bit level once
    Image.fromarray(levels * 257).save(tmp_path / "deep.png")  # 16-bit: 0..65535
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "plain.png")
    deep, plain = (np.asarray(open_image(tmp_path / name, "L")) for name in ("deep.png", "plain.png"))
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # Pillow's own convert("L") clips these to 255
    assert np.array_equal(deep, plain) and np.array_equal(np.asarray(open_image(tmp_path / "deep.png", "RGB"))[..., 0], plain)


@pytest.mark.parametrize("bad, why", [("empty", "an empty file"), ("corrupt", "not an image Pillow can read"),
                                      ("huge", "pixels, above the 1,000 allowed")])
def test_an_unreadable_image_in_a_training_folder_is_named_or_left_out_with_a_count(bad, why, tmp_path, capsys):
    from PIL import Image

    root = make_folder(tmp_path / "imgs", train_per_class=4, test_per_class=2)
    target = root / "train" / "dark" / f"{bad}.png"
    if bad == "empty":
        target.write_bytes(b"")
    elif bad == "corrupt":
        target.write_bytes(b"not a png at all" * 10)
    else:
        Image.fromarray(np.zeros((50, 50), np.uint8)).save(target)  # 2,500 pixels
    args = ["teacher", "--model.model", "cnn_tiny", "--data.dataset", "image_folder", "--data.root", str(root),
            "--data.image_size", "16", "--data.max_image_pixels", "1000", "--trainer.max_epochs", "1", *QUIET]
    assert main([*args, "--run_dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {target} is ") and why in err[-1] and "1 such of 13 images" in err[-1]
    with pytest.warns(UserWarning, match=r"left out 1 unreadable of 13 images"):
        assert main([*args, "--data.skip_unreadable", "true", "--run_dir", str(tmp_path / "b")]) == 0
