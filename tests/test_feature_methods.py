"""FitNets, attention transfer, CRD and DIST: references, learnable parts, the bounded queue, the real CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distill.checkpoint import load_checkpoint
from distill.losses import AT, CRD, DIST, DISTILLERS, FitNet, Outputs, at_loss, contrastive_loss, dist_loss
from distill.modules import DistillModule
from distill.train import main
from tests.conftest import FAST


def test_attention_loss_matches_a_hand_computed_reference():
    student = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], ]).repeat(1, 2, 1, 1)  # (1, 2, 2, 2): all energy top-left
    teacher = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]]]])  # (1, 1, 2, 2): all energy bottom-right
    # Attention maps: mean_c f^2 normalized -> [1, 0, 0, 0] and [0, 0, 0, 1]; mean squared difference 2/4.
    assert at_loss(student, teacher).item() == pytest.approx(0.5, rel=1e-6)
    # A larger map is pooled to the smaller one first: 4x4 of ones vs 2x2 of ones -> equal maps.
    assert at_loss(torch.ones(1, 3, 4, 4), torch.ones(1, 5, 2, 2)).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_loss_hands_a_channels_last_network_a_channels_last_gradient():
    # An NCHW gradient reaching a channels_last network is converted back at every layer below the tap,
    # which once made AT a fifth slower per step on CPU; the gradient must keep the features' layout.
    leaf = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    features = leaf * 1.0  # a non-leaf, as a tapped activation is (a leaf's .grad is re-strided by autograd)
    layouts = []
    features.register_hook(lambda grad: layouts.append(grad.is_contiguous(memory_format=torch.channels_last)))
    at_loss(features, torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last)).backward()
    assert layouts == [True]


def test_dist_terms_match_numpy_pearson_correlations():
    torch.manual_seed(0)
    student, teacher, t = torch.randn(6, 4), torch.randn(6, 4), 2.0
    inter, intra = dist_loss(student, teacher, t)
    ps, pt = (torch.softmax(x / t, dim=1).double().numpy() for x in (student, teacher))
    ref_inter = 1 - np.mean([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(6)])
    ref_intra = 1 - np.mean([np.corrcoef(ps[:, k], pt[:, k])[0, 1] for k in range(4)])
    assert inter.item() == pytest.approx(ref_inter * t**2, rel=1e-5)
    assert intra.item() == pytest.approx(ref_intra * t**2, rel=1e-5)
    same = dist_loss(teacher, teacher, t)
    assert same[0].item() == pytest.approx(0.0, abs=1e-5) and same[1].item() == pytest.approx(0.0, abs=1e-5)
    terms = DIST(temperature=t, beta=2.0, gamma=3.0)(Outputs(student), Outputs(teacher), torch.zeros(6, dtype=torch.long))
    assert terms["inter"].item() == pytest.approx(2 * inter.item()) and terms["intra"].item() == pytest.approx(3 * intra.item())


def test_contrastive_loss_matches_a_hand_computed_softmax_and_masks_negatives():
    anchor = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[0.6, 0.8]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    keep_all = torch.zeros(1, 2, dtype=torch.bool)
    scores = torch.tensor([0.6, 0.0, -1.0]) / 0.5
    expected = -(scores[0] - torch.logsumexp(scores, 0))
    assert contrastive_loss(anchor, positive, negatives, 0.5, keep_all).item() == pytest.approx(expected.item(), rel=1e-6)
    masked = contrastive_loss(anchor, positive, negatives, 0.5, torch.tensor([[True, False]]))
    assert masked.item() == pytest.approx(-(scores[0] - torch.logsumexp(scores[[0, 2]], 0)).item(), rel=1e-6)


def test_the_crd_queue_has_a_fixed_size_whatever_the_data_and_masks_same_class_negatives():
    torch.manual_seed(0)
    method = CRD(dim=8, queue_size=20)
    method.build({"penultimate": torch.Size([2, 16])}, {"penultimate": torch.Size([2, 32])})
    size = sum(b.numel() for b in method.buffers())
    for step in range(10):  # 10 batches of 8: 80 samples through a queue of 20
        labels = torch.randint(0, 3, (8,))
        method(Outputs(torch.randn(8, 3), {"penultimate": torch.randn(8, 16)}),
               Outputs(torch.randn(8, 3), {"penultimate": torch.randn(8, 32)}), labels)
    assert sum(b.numel() for b in method.buffers()) == size and method.queue_labels.min() >= 0
    assert int(method.queue_next) == (10 * 8) % 20
    # Evaluation mode computes the loss without touching the queue.
    method.eval()
    before = method.queue_teacher.clone()
    method(Outputs(torch.randn(8, 3), {"penultimate": torch.randn(8, 16)}),
           Outputs(torch.randn(8, 3), {"penultimate": torch.randn(8, 32)}), torch.zeros(8, dtype=torch.long))
    assert torch.equal(before, method.queue_teacher)


def test_fitnet_regressor_maps_student_maps_to_the_teachers_and_refuses_smaller_ones():
    method = FitNet(hint="stage2", guided="stage1")
    method.build({"stage2": torch.Size([2, 8, 14, 14])}, {"stage1": torch.Size([2, 32, 7, 7])})
    assert method.regressor(torch.randn(3, 8, 14, 14)).shape == (3, 32, 7, 7)
    from distill.errors import UsageError

    with pytest.raises(UsageError, match="smaller than the teacher's"):
        FitNet().build({"stage2": torch.Size([2, 8, 7, 7])}, {"stage2": torch.Size([2, 8, 14, 14])})


@pytest.mark.parametrize("name", [n for n in DISTILLERS.names() if "classification" in DISTILLERS.get(n).tasks])
def test_every_registered_method_trains_through_the_cli_and_keeps_the_teacher_out_of_its_checkpoint(
        name, teacher_run, tmp_path):
    run_dir = tmp_path / name
    assert main(["student", "--model.model", "cnn_tiny", "--model.teacher", str(teacher_run / "best.ckpt"),
                 "--model.method", name, "--run_dir", str(run_dir), *FAST]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == name and math.isfinite(metrics["test/acc"])
    state = load_checkpoint(run_dir / "last.ckpt")["state_dict"]
    assert not any(k.startswith("teacher.") for k in state)
    # The method's learnable parts and buffers, as the system builds them, are all in the checkpoint.
    system = DistillModule(model="cnn_tiny", teacher=str(teacher_run / "best.ckpt"), method=DISTILLERS.get(name)(),
                           num_classes=10, input_shape=(1, 28, 28))
    assert {f"distiller.{k}" for k in system.distiller.state_dict()} == {k for k in state if k.startswith("distiller.")}


def test_a_feature_method_resumes_exactly(teacher_run, tmp_path):
    common = ["student", "--model.model", "cnn_tiny", "--model.teacher", str(teacher_run / "best.ckpt"),
              "--model.method", "crd", "--model.method.queue_size", "64", "--model.scheduler", "constant", *FAST[2:]]
    assert main([*common, "--trainer.max_epochs", "2", "--run_dir", str(tmp_path / "straight")]) == 0
    assert main([*common, "--trainer.max_epochs", "1", "--run_dir", str(tmp_path / "resumed")]) == 0
    assert main([*common, "--trainer.max_epochs", "2", "--run_dir", str(tmp_path / "resumed"), "--ckpt_path", "last"]) == 0
    straight = load_checkpoint(tmp_path / "straight" / "last.ckpt")["state_dict"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.ckpt")["state_dict"]
    assert straight.keys() == resumed.keys() and any("queue_teacher" in k for k in straight)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_methods_own_their_feature_names_and_settings():
    assert AT().student_features == ("stage1", "stage2") and AT(beta=0).needs_teacher is False
    assert FitNet(hint="stage1", guided="stage3").teacher_features == ("stage3",)
    assert DIST().teacher_features == () and DIST(beta=0, gamma=0).needs_teacher is False


def test_crd_learns_from_cached_pooled_teacher_vectors_exactly_as_from_the_online_teacher(teacher_run):
    from distill.teacher.cache import TeacherCache

    teacher = str(teacher_run / "best.ckpt")

    def build() -> DistillModule:  # the same seed: the same student, embeddings and queue
        torch.manual_seed(0)
        return DistillModule(model="cnn_tiny", teacher=teacher, method=CRD(dim=8, queue_size=16), num_classes=10,
                             input_shape=(1, 28, 28), channels_last=False)

    system, cached = build(), build()
    inputs, labels, indices = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,)), torch.arange(6)
    request = system.table_request()
    rows = request.rows(inputs)  # (B, K + D): the logits, then the pooled penultimate vector
    width = system.cached_feature_widths["penultimate"]
    assert rows.shape == (6, 10 + width) and request.columns == f"logits+penultimate:{width}"
    cached.cached_logits = rows  # looked up by index, as the cache table is
    _, online_terms = system.training_losses(inputs, labels, indices)
    _, cached_terms = cached.training_losses(inputs, labels, indices)
    assert all(torch.allclose(online_terms[k], cached_terms[k], rtol=1e-6, atol=1e-7) for k in online_terms)
    # Which path runs: pooled vectors are cached; spatial maps (AT) are not, and the reason says so.
    at = DistillModule(model="cnn_tiny", teacher=teacher, method=AT(), num_classes=10, input_shape=(1, 28, 28))
    assert at.cached_feature_widths is None and at.table_request().columns == "logits"
    assert "too large to cache" in TeacherCache().reason_not_cached(at.table_request(), None)
