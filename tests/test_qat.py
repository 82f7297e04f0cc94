"""Quantization-aware distillation: the fake-quantized network, the qat stage through the CLI, its int8 file."""

from __future__ import annotations

import json

import pytest
import torch

from distill.checkpoint import load_trained
from distill.models import create_model
from distill.models.quantized import QuantizationAware, fold_batchnorm, quantization_aware, quantized_graph
from distill.train import main
from tests.conftest import FAST

pytest.importorskip("torchao")


@pytest.mark.parametrize("name, shape", [("cnn_small", (1, 28, 28)), ("mlp_small", (7,)), ("resnet8", (3, 32, 32)),
                                         ("wrn_16_1", (3, 32, 32)), ("vgg8", (3, 32, 32))])
def test_the_int8_graph_computes_exactly_what_the_fake_quantized_network_does(name, shape):
    torch.manual_seed(0)
    network = create_model(name, num_classes=10, in_channels=shape[0]).eval()
    inputs = torch.randn(64, *shape)
    with torch.no_grad():
        expected = network(inputs)
    quantized = QuantizationAware(network, shape)
    assert quantized.calibrate([inputs[:32], inputs[32:]]) == 64
    quantized.train()
    quantized(inputs).sum().backward()  # gradients pass the fake quantization (straight-through)
    assert all(p.grad is not None for p in quantized.parameters())
    quantized.eval()
    with torch.no_grad():
        fake = quantized(inputs)
        graph = quantized_graph(quantized)
        assert torch.equal(graph(inputs), fake)  # the file is exported from this graph
    # int8 rounding moves the outputs a little, never far (the network is unchanged otherwise)
    assert (fake - expected).abs().max() < 0.1 * expected.abs().max() + 0.1


def test_batchnorm_is_folded_into_the_layer_before_it():
    network = create_model("cnn_small", num_classes=10, in_channels=1).eval()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # statistics a trained network would have
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    inputs = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        before = network(inputs)
        assert fold_batchnorm(network) == 3
        assert torch.allclose(network(inputs), before, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())


def test_a_rebuilt_quantization_aware_network_loads_its_weights_exactly():
    network = create_model("cnn_small", num_classes=10, in_channels=1).eval()
    quantized = QuantizationAware(network, (1, 28, 28))
    quantized.calibrate([torch.randn(16, 1, 28, 28)])
    quantized.eval()
    rebuilt = quantization_aware(create_model("cnn_small", num_classes=10, in_channels=1), (1, 28, 28),
                                 quantized.settings())
    rebuilt.load_state_dict(quantized.state_dict())
    rebuilt.eval()
    inputs = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs), quantized(inputs))


def test_the_qat_stage_trains_through_the_cli_and_compress_exports_its_int8_file(teacher_run, student_run, tmp_path,
                                                                               capsys):
    from distill.compress import main as compress
    from distill.predict import main as predict

    run_dir = tmp_path / "qat"
    args = ["qat", "--model.source_ckpt", str(student_run / "best.ckpt"), "--model.teacher",
            str(teacher_run / "best.ckpt"), "--model.calibration", "64", *FAST]
    assert main([*args, "--run_dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    source = json.loads((student_run / "metrics.json").read_text())
    assert metrics["stage"] == "qat" and metrics["model"] == source["model"] and metrics["method"] == "kd"
    assert metrics["calibration_inputs"] == 64 and metrics["quantization"] == "torchao-pt2e-x86"
    trained = load_trained(run_dir / "best.ckpt")
    assert isinstance(trained.network, QuantizationAware)
    assert trained.network(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # Resume: calibrated alike, then the checkpoint's weights and ranges load strictly.
    assert main([*args[:-len(FAST)], "--run_dir", str(run_dir), "--ckpt_path", "last", "--trainer.max_epochs", "2",
                 *FAST[2:]]) == 0
    # A method reading layers by name has none to read in a quantized graph: one line.
    assert main([*args, "--model.method", "at", "--run_dir", str(tmp_path / "at")]) == 2
    assert "takes a logit method" in capsys.readouterr().err.strip().splitlines()[-1]
    # Side by side: the student's fp32 and post-training int8 files, and the quantization-aware int8 file.
    out = tmp_path / "compressed"
    assert compress(["--ckpt", str(student_run / "best.ckpt"), str(run_dir / "best.ckpt"), "--out_dir", str(out),
                     "--latency_runs", "3", "--calibration", "64"]) == 0
    report = json.loads((out / "compress.json").read_text())
    rows = {r["name"]: r for r in report["artifacts"]}
    student = student_run.name
    assert set(rows) == {f"{student} (PyTorch)", f"{student} (ONNX fp32)", f"{student} (ONNX int8)",
                         "qat (PyTorch)", "qat (ONNX int8)"}
    qad = rows["qat (ONNX int8)"]
    assert qad["format"] == "onnx int8 (QDQ, quantization-aware)" and qad["parity"]["top1_agreement"] >= 0.995
    assert rows["qat (PyTorch)"]["format"] == "pytorch int8 fake-quant" and qad["speedup_vs_onnx_fp32"] is None
    sidecar = json.loads((out / "qat.int8.json").read_text())
    assert sidecar["format"] == "onnx int8" and sidecar["recipe"] == qad["format"]
    (tmp_path / "img").mkdir()
    from PIL import Image

    Image.new("L", (28, 28), 128).save(tmp_path / "img" / "a.png")
    assert predict(["--model", str(out / "qat.int8.onnx"), "--input", str(tmp_path / "img"),
                    "--out", str(tmp_path / "p.csv")]) == 0


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_table_networks_train_int8_aware_and_export(task, tmp_path):
    from distill.compress import main as compress
    from tests.test_tabular import make_regression_table, make_table

    if task == "classification":
        table, target = make_table(tmp_path / "t.csv"), "label"
    else:
        table, target = make_regression_table(tmp_path / "t.csv"), "y"
    data = ["--data", "tabular", "--data.path", str(table), "--data.target", target]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--trainer.logger", "false"]
    assert main(["teacher", "--model.model", "mlp_small", "--trainer.max_epochs", "3", *data, *quiet,
                 "--run_dir", str(tmp_path / "teacher")]) == 0
    teacher = str(tmp_path / "teacher" / "best.ckpt")
    assert main(["qat", "--model.source_ckpt", teacher, "--model.teacher", teacher, "--trainer.max_epochs", "1",
                 *data, *quiet, "--run_dir", str(tmp_path / "qat")]) == 0
    trained = load_trained(tmp_path / "qat" / "best.ckpt")
    assert trained.hparams["quantization"]["scheme"] == "torchao-pt2e-x86"
    if task == "classification":  # another split would score rows the source learned from as unseen
        assert main(["qat", "--model.source_ckpt", teacher, "--model.teacher", teacher, *data, "--data.split_seed",
                     "3", *quiet, "--run_dir", str(tmp_path / "other")]) == 2
        assert not (tmp_path / "other" / "best.ckpt").exists()
    assert compress(["--ckpt", teacher, str(tmp_path / "qat" / "best.ckpt"), "--out_dir", str(tmp_path / "c"),
                     "--latency_runs", "3", "--calibration", "32"]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "c" / "compress.json").read_text())["artifacts"]}
    assert {"qat (PyTorch)", "qat (ONNX int8)"} <= set(rows)
    if task == "regression":  # outputs in the target's units, as the network gives them
        assert rows["qat (ONNX int8)"]["r2"] == pytest.approx(rows["qat (PyTorch)"]["r2"], abs=0.02)
