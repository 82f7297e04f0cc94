"""Structured pruning: shapes kept, reloads exactly at the pruned widths, and the prune stage through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from distill.checkpoint import load_trained
from distill.errors import UsageError
from distill.models import count_parameters, create_model
from distill.modules.prune import macs, prune_channels
from distill.train import main
from tests.conftest import FAST, fast

pytest.importorskip("torch_pruning")


@pytest.mark.parametrize("name, shape", [("cnn_small", (1, 28, 28)), ("resnet8", (3, 32, 32)), ("wrn_16_1", (3, 32, 32))])
def test_pruning_keeps_forward_shapes_and_reloads_exactly_with_weights_only(name, shape, teacher_run, tmp_path):
    torch.manual_seed(0)
    network = create_model(name, num_classes=10, in_channels=shape[0]).eval()
    before_params, before_macs = count_parameters(network), macs(network, shape)
    prune_channels(network, shape, ratio=0.5, round_to=4)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        out = network(x)
    assert out.shape == (3, 10)
    assert count_parameters(network) < 0.45 * before_params and macs(network, shape) < 0.45 * before_macs
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 4 == 0 for c in convs[1:])  # round_to: SIMD-friendly widths
    # A checkpoint holding the pruned weights (plain tensors) rebuilds at the pruned widths.
    ckpt = torch.load(teacher_run / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"].update(model=name, input_shape=list(shape), num_classes=10, model_kwargs=None)
    ckpt["state_dict"] = {f"model.{k}": v for k, v in network.state_dict().items()}
    torch.save(ckpt, tmp_path / "pruned.ckpt")
    rebuilt = load_trained(tmp_path / "pruned.ckpt").network
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)


def test_the_prune_stage_trains_through_the_cli_and_its_result_loads_back(teacher_run, student_run, tmp_path):
    run_dir = tmp_path / "pruned"
    assert main(["prune", "--model.source_ckpt", str(student_run / "best.ckpt"), "--model.teacher_ckpt",
                 str(teacher_run / "best.ckpt"), "--model.pruning_ratio", "0.5", "--run_dir", str(run_dir), *FAST]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    source = json.loads((student_run / "metrics.json").read_text())
    assert metrics["stage"] == "prune" and metrics["model"] == source["model"]
    assert metrics["params"] < 0.45 * source["params"] and metrics["macs_reduction"] > 2.5
    assert metrics["source_params"] == source["params"] and metrics["method"] == "kd"
    network = load_trained(run_dir / "best.ckpt").network
    assert count_parameters(network) == metrics["params"]
    assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # Resume: the source is pruned again, deterministically, and the checkpoint loads strictly.
    assert main(["prune", "--model.source_ckpt", str(student_run / "best.ckpt"), "--model.teacher_ckpt",
                 str(teacher_run / "best.ckpt"), "--run_dir", str(run_dir), "--ckpt_path", "last",
                 "--trainer.max_epochs", "2", *FAST[2:]]) == 0


def test_a_macs_target_is_reached_progressively_or_refused():
    shape = (1, 28, 28)
    network = create_model("cnn_small", num_classes=10, in_channels=1).eval()
    before = macs(network, shape)
    prune_channels(network, shape, ratio=0.9, iterative_steps=20, target_macs_reduction=3.0)
    after = macs(network, shape)
    assert before >= 3.0 * after and before < 6.0 * after  # stopped soon after the target, not at ratio 0.9
    with pytest.raises(UsageError, match="cannot be reached with pruning_ratio 0.1"):
        prune_channels(create_model("cnn_small", num_classes=10, in_channels=1), shape, ratio=0.1,
                       iterative_steps=2, target_macs_reduction=10.0)


@pytest.mark.parametrize("kwargs, message", [({"ratio": 1.0}, r"pruning_ratio must be in \(0, 1\)"),
                                             ({"ratio": 0.5, "importance": "random"}, "unknown importance 'random'"),
                                             ({"ratio": 0.5, "importance": "taylor"}, "needs a loss")])
def test_bad_pruning_settings_are_one_line(kwargs, message):
    with pytest.raises(UsageError, match=message):
        prune_channels(create_model("cnn_tiny", num_classes=10, in_channels=1), (1, 28, 28), **kwargs)


def test_taylor_importance_keeps_the_channels_the_loss_depends_on():
    """Channels the loss cannot feel go first under taylor, whatever their weights' magnitude."""
    torch.manual_seed(0)
    shape = (1, 28, 28)
    network = create_model("cnn_small", num_classes=10, in_channels=1).eval()
    first, second = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)][:2]
    width = first.out_channels
    with torch.no_grad():  # half the first layer's filters: large, but the next layer ignores them
        first.weight[: width // 2] *= 100.0
        second.weight[:, : width // 2] = 0.0
    original = first.weight.detach().clone()
    inputs, targets = torch.rand(16, *shape), torch.randn(16, 10)

    def loss_of(net):
        return torch.nn.functional.mse_loss(net(inputs), targets)

    kept = {}
    for importance in ("magnitude", "taylor"):
        copy = create_model("cnn_small", num_classes=10, in_channels=1).eval()
        copy.load_state_dict(network.state_dict())
        conv = next(m for m in copy.modules() if isinstance(m, torch.nn.Conv2d))
        prune_channels(copy, shape, ratio=0.5, importance=importance, loss_of=loss_of)
        assert conv.out_channels == width // 2 and all(p.grad is None for p in copy.parameters())
        kept[importance] = {int((original - row).flatten(1).abs().sum(1).argmin()) for row in conv.weight.detach()}
    assert kept["magnitude"] == set(range(width // 2))  # the large, ignored filters
    assert kept["taylor"] == set(range(width // 2, width))  # the ones the loss depends on


def test_the_prune_stage_ranks_channels_by_taylor_through_the_cli(teacher_run, student_run, tmp_path):
    run_dir = tmp_path / "taylor"
    args = ["prune", "--model.source_ckpt", str(student_run / "best.ckpt"), "--model.teacher_ckpt",
            str(teacher_run / "best.ckpt"), "--model.importance", "taylor", "--model.taylor_images", "100",
            *fast(limit_train_batches="1")]
    assert main([*args, "--run_dir", str(run_dir)]) == 0
    assert main([*args, "--run_dir", str(tmp_path / "again")]) == 0
    first, again = (load_trained(d / "last.ckpt").network.state_dict() for d in (run_dir, tmp_path / "again"))
    assert all(torch.equal(first[k], again[k]) for k in first)  # deterministic: resuming prunes the same channels
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["importance"] == "taylor" and metrics["macs_reduction"] > 2.5
