"""python -m distill.predict: any artifact on image files, with the preprocessing it was trained with."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from distill.checkpoint import load_trained
from distill.data import ImageDataModule
from distill.predict import main


@pytest.fixture
def image_folder(tmp_path):
    """Twelve Fashion-MNIST test images as PNG files in nested folders, and their model-ready tensors."""
    data = ImageDataModule()
    data.setup("test")
    raw = data.test_set.images[:12]  # (12, 1, 28, 28) uint8
    for i, image in enumerate(raw):
        folder = tmp_path / "images" / f"part{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / f"{i:02d}.png")
    return tmp_path / "images", data.transform(raw, train=False), data


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_checkpoint_predicts_files_as_it_predicts_its_test_set(student_run, image_folder, tmp_path):
    folder, inputs, data = image_folder
    out = tmp_path / "p.csv"
    assert main(["--model", str(student_run / "best.ckpt"), "--input", str(folder), "--out", str(out),
                 "--top_k", "2", "--batch_size", "5"]) == 0
    rows = read(out)
    files = sorted(folder.rglob("*.png"))
    assert [r["file"] for r in rows] == [str(p) for p in files] and set(rows[0]) >= {"class", "probability", "top2"}
    network = load_trained(student_run / "best.ckpt").network
    with torch.no_grad():
        expected = network(inputs).argmax(1)
    by_index = {int(p.stem): r for p, r in zip(files, rows)}
    assert [by_index[i]["class"] for i in range(12)] == [data.class_names[j] for j in expected.tolist()]
    assert all(float(r["probability"]) >= float(r["top2_probability"]) for r in rows)


def test_an_onnx_file_predicts_what_its_checkpoint_predicts(student_run, image_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from distill.compress import main as compress_main

    folder, _, _ = image_folder
    assert compress_main(["--ckpt", str(student_run / "best.ckpt"), "--out_dir", str(tmp_path / "c"),
                          "--latency_runs", "3", "--calibration", "32"]) == 0
    onnx_file = tmp_path / "c" / f"{student_run.name}.onnx"
    assert main(["--model", str(onnx_file), "--input", str(folder), "--out", str(tmp_path / "o.csv")]) == 0
    assert main(["--model", str(student_run / "best.ckpt"), "--input", str(folder), "--out", str(tmp_path / "c.csv")]) == 0
    assert [r["class"] for r in read(tmp_path / "o.csv")] == [r["class"] for r in read(tmp_path / "c.csv")]
    onnx_file.with_suffix(".json").unlink()
    assert main(["--model", str(onnx_file), "--input", str(folder), "--out", str(tmp_path / "x.csv")]) == 2


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing", "no such file or directory"),
    (lambda d: d, "no image files"),
])
def test_bad_input_is_one_line(student_run, tmp_path, capsys, make_input, message):
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["--model", str(student_run / "best.ckpt"), "--input", str(make_input(tmp_path)),
                 "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and not (tmp_path / "p.csv").exists()
