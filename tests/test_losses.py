import math

import pytest
import torch
import torch.nn.functional as F

from distill.errors import UsageError
from distill.losses import DISTILLERS, KD, Outputs, kd_loss


def test_kd_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0]])
    t = 2.0
    p = [math.exp(v / t) for v in (3.0, 1.0, 0.0)]
    p = [v / sum(p) for v in p]
    q = [math.exp(v / t) for v in (1.0, 2.0, 3.0)]
    q = [v / sum(q) for v in q]
    expected = t**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert kd_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_is_zero_for_equal_logits():
    logits = torch.randn(8, 10)
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_uses_batchmean_not_mean():
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    per_sample = F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="none").sum(1)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(per_sample.mean().item(), rel=1e-5)


def test_kd_loss_scales_by_t_squared():
    student, teacher = torch.randn(16, 10), torch.randn(16, 10)
    t = 3.0
    kl = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean")
    assert kd_loss(student, teacher, t).item() == pytest.approx(t**2 * kl.item(), rel=1e-5)


def test_kd_terms_mix_by_alpha():
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    terms = KD(temperature=4.0, alpha=0.3)(Outputs(student), Outputs(teacher), labels)
    assert set(terms) == {"kd", "ce"}
    assert terms["kd"].item() == pytest.approx(0.3 * kd_loss(student, teacher, 4.0).item(), rel=1e-5)
    assert terms["ce"].item() == pytest.approx(0.7 * F.cross_entropy(student, labels).item(), rel=1e-5)


def test_alpha_zero_needs_no_teacher():
    method = KD(alpha=0.0)
    assert not method.needs_teacher
    labels = torch.randint(0, 5, (4,))
    terms = method(Outputs(torch.randn(4, 5)), None, labels)
    assert set(terms) == {"ce"}


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": -1.0}, {"alpha": 1.5}, {"alpha": -0.1}])
def test_kd_rejects_bad_arguments(kwargs):
    with pytest.raises(UsageError):
        KD(**kwargs)


@pytest.mark.parametrize("name", DISTILLERS.names())
def test_every_method_returns_named_scalar_terms(name):
    method = DISTILLERS.get(name)()
    student = torch.randn(4, 5, requires_grad=True)
    terms = method(Outputs(student), Outputs(torch.randn(4, 5)), torch.randint(0, 5, (4,)))
    assert terms and all(v.ndim == 0 for v in terms.values())
    sum(terms.values()).backward()
    assert student.grad is not None
