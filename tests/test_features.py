"""Features by module name: aliases of every registered architecture, the recorder's guards, the probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.errors import UsageError
from distill.features import FeatureRecorder, feature_aliases, probe_shapes, resolve_feature
from distill.models.trees import LIBRARIES
from distill.models import create_model, list_models
from distill.models.tta import with_tta


def small_input(name: str) -> tuple[int, ...]:
    if name.startswith("mlp"):
        return (12,)  # a table row of 12 features
    return (1, 28, 28) if name.startswith("cnn") else (3, 32, 32)


@pytest.mark.parametrize("name", [m for m in list_models() if m not in LIBRARIES])  # networks, not fitted trees
def test_every_architecture_publishes_stage_and_penultimate_aliases(name):
    shape = small_input(name)
    model = create_model(name, num_classes=10, in_channels=shape[0])
    aliases = feature_aliases(model)
    stages = sorted(a for a in aliases if a.startswith("stage"))
    assert len(stages) >= 2 and "penultimate" in aliases
    recorder = FeatureRecorder(model, [*stages, "penultimate"])
    logits, shapes = probe_shapes(model, recorder, shape)
    assert logits == (2, 10)
    for alias in stages:  # (B, C, H, W) maps; (B, C) vectors for table rows
        assert len(shapes[alias]) == len(shape) + 1 and shapes[alias][0] == 2
    sides = [shapes[alias][-1] for alias in stages]
    assert sides == sorted(sides, reverse=True)  # later stages never grow
    # The penultimate feature holds what the last linear layer reads.
    assert shapes["penultimate"].numel() // 2 == [m for m in model.modules() if isinstance(m, nn.Linear)][-1].in_features


def test_unknown_feature_names_list_close_matches():
    model = create_model("cnn_small", num_classes=10, in_channels=1)
    assert resolve_feature(model, "stage2") == "features.7" and resolve_feature(model, "features.0") == "features.0"
    with pytest.raises(UsageError, match=r"no module or feature alias 'stage9'; close: stage3, stage2, stage1; aliases: stage1"):
        resolve_feature(model, "stage9")


def test_recorder_keeps_features_only_inside_a_record_and_detaches_on_request():
    model = create_model("cnn_tiny", num_classes=10, in_channels=1)
    recorder = FeatureRecorder(model, ["stage1"], detach=True)
    x = torch.randn(3, 1, 28, 28)
    model(x)  # outside a record: nothing kept
    with pytest.raises(UsageError, match="not computed inside the last record"):
        recorder.pop()
    with recorder:
        model(x)
    feature = recorder.pop()["stage1"]
    assert feature.shape == (3, 8, 14, 14) and not feature.requires_grad
    recorder.remove()
    with recorder:
        model(x)
    with pytest.raises(UsageError):
        recorder.pop()  # the hooks are gone


def test_a_module_that_runs_twice_in_one_forward_is_refused():
    model = create_model("cnn_tiny", num_classes=10, in_channels=1).eval()
    recorder = FeatureRecorder(model, ["stage2"])
    twice = with_tta(model, "flip")  # the network runs once per view
    with pytest.raises(UsageError, match="ran more than once in one forward pass"), recorder:
        twice(torch.randn(2, 1, 28, 28))


def test_a_capture_modified_in_place_afterwards_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    recorder = FeatureRecorder(model, ["1"])  # the BatchNorm's output, which the ReLU then overwrites
    with recorder:
        model(torch.randn(2, 1, 8, 8))
    with pytest.raises(UsageError, match="modified in place after it was captured"):
        recorder.pop()
    fine = FeatureRecorder(model, ["2"])
    with fine:
        model(torch.randn(2, 1, 8, 8))
    assert fine.pop()["2"].shape == (2, 4, 6, 6)


def test_probe_leaves_batchnorm_statistics_and_the_training_mode_as_they_were():
    model = create_model("cnn_small", num_classes=10, in_channels=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe_shapes(model, FeatureRecorder(model, ["stage3"]), (1, 28, 28))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_no_hooks_without_names():
    from distill.modules import DistillModule

    assert DistillModule._recorder(nn.Linear(2, 2), (), detach=False) is None
