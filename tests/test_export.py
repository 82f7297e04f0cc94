"""ONNX export checked against PyTorch, int8 quantization, and the optional dependency's message."""

from __future__ import annotations

import pytest
import torch

from distill.errors import UsageError
from distill.export import OnnxClassifier, export_onnx, file_bytes, quantize_int8, require, verify_onnx
from distill.models import create_model

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name, shape", [("cnn_small", (1, 28, 28)), ("resnet8", (3, 32, 32))])
def test_export_matches_pytorch_at_every_batch_size_in_one_file(name, shape, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=shape[0]).eval()
    path = export_onnx(model, shape, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # the weights inside, nothing beside it
    onnx_model = OnnxClassifier(path)
    for batch in (1, 64):
        x = torch.randn(batch, *shape)
        parity = verify_onnx(onnx_model, model, x)
        assert parity["max_logit_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
        assert onnx_model(x).shape == (batch, 10)
    assert file_bytes(path) == path.stat().st_size


def test_outputs_in_large_units_match_to_float32_rounding_at_their_scale(tmp_path):
    # A regression predicting house prices near 450,000: one float32 step there is 0.03, far above a
    # fixed 1e-4, so every such export was refused before.
    from distill.models import TargetScale

    torch.manual_seed(0)
    model = TargetScale(create_model("mlp_small", num_classes=1, in_channels=6), 450_000.0, 90_000.0).eval()
    onnx_model = OnnxClassifier(export_onnx(model, (6,), tmp_path / "m.onnx"))
    parity = verify_onnx(onnx_model, model, torch.randn(256, 6))
    assert parity["max_logit_diff"] < 450_000 * 1e-5
    with torch.no_grad():
        model.mean += 50.0  # a real difference at that scale is still caught
    with pytest.raises(UsageError, match="does not match PyTorch"):
        verify_onnx(onnx_model, model, torch.randn(256, 6))


def test_an_export_that_does_not_match_fails_loudly(tmp_path):
    model = create_model("cnn_tiny", num_classes=10, in_channels=1).eval()
    onnx_model = OnnxClassifier(export_onnx(model, (1, 28, 28), tmp_path / "m.onnx"))
    with torch.no_grad():
        model.classifier[-1].bias += 1.0  # PyTorch's network changes after the export
    with pytest.raises(UsageError, match="does not match PyTorch: max output difference"):
        verify_onnx(onnx_model, model, torch.randn(8, 1, 28, 28))


def test_int8_is_smaller_loads_and_agrees_with_fp32(tmp_path):
    from distill.compress import calibration_batches
    from distill.data import ImageDataModule

    torch.manual_seed(0)
    network = create_model("cnn_small", num_classes=10, in_channels=1).eval()
    fp32 = export_onnx(network, (1, 28, 28), tmp_path / "m.onnx")
    data = ImageDataModule(eval_batch_size=256)
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", iter(calibration_batches(data, 128)))
    assert file_bytes(int8) < 0.8 * file_bytes(fp32)
    x = next(iter(data.test_batches()))[0]
    a, b = OnnxClassifier(fp32)(x), OnnxClassifier(int8)(x)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.95


def test_a_missing_optional_dependency_names_the_extra():
    with pytest.raises(UsageError, match=r'no_such_runtime is not installed; install the compression extra: '
                                         r'pip install -e "\.\[compress\]"'):
        require("no_such_runtime")
