import math

import pytest
import torch
from torch import nn

from distill import optim
from distill.errors import UsageError


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize("name", optim.OPTIMIZERS.names())
def test_every_optimizer_builds_and_steps(name):
    torch.manual_seed(0)
    net = tiny_net()
    opt = optim.build_optimizer(name, net, lr=0.1, weight_decay=1e-4, decay_norm_and_bias=False,
                                nesterov=name == "sgd")
    before = [p.detach().clone() for p in net.parameters()]
    net(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(UsageError, match="unknown optimizer 'lion'; valid: adadelta, adagrad, adam, adamax, adamw"):
        optim.build_optimizer("lion", tiny_net(), lr=0.1, weight_decay=0.0, decay_norm_and_bias=False)


def test_no_decay_group_holds_exactly_norm_and_bias_parameters():
    net = tiny_net()
    decay, no_decay = optim.split_decay_groups(net, decay_norm_and_bias=False)
    assert {id(p) for p in decay} == {id(net[0].weight), id(net[3].weight)}
    assert {id(p) for p in no_decay} == {id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    decay_all, none = optim.split_decay_groups(net, decay_norm_and_bias=True)
    assert len(decay_all) == 5 and none == []
    opt = optim.build_optimizer("adamw", net, lr=0.1, weight_decay=0.5, decay_norm_and_bias=False)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]


def test_l2_penalty_is_half_sum_of_squares():
    w1, w2 = torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])
    assert optim.l2_penalty([w1, w2]).item() == pytest.approx(0.5 * (1 + 4 + 9))


def _lrs(name: str, total: int, warmup: int, **params: float) -> list[float]:
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = optim.build_scheduler(name, opt, total, warmup, **params)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_then_cosine_follows_the_formula():
    total, warmup, base = 100, 10, 2.0
    lrs = _lrs("cosine", total, warmup)
    for step in (0, 5, 9):
        assert lrs[step] == pytest.approx(base * (step + 1) / (warmup + 1))
    for step in (10, 40, 99):
        t = step - warmup
        assert lrs[step] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * t / (total - warmup))))


def test_multistep_fractions_and_step_schedule():
    lrs = _lrs("multistep", 100, 0, milestones=(0.5, 0.75), gamma=0.1)
    assert lrs[49] == pytest.approx(2.0) and lrs[50] == pytest.approx(0.2) and lrs[75] == pytest.approx(0.02)
    lrs = _lrs("step", 30, 0, step_size=10, gamma=0.5)
    assert (lrs[9], lrs[10], lrs[29]) == pytest.approx((2.0, 1.0, 0.5))


def test_exponential_polynomial_constant():
    assert _lrs("exponential", 100, 0, gamma=0.01)[50] == pytest.approx(2.0 * 0.01**0.5)
    assert _lrs("polynomial", 10, 0, power=2.0)[5] == pytest.approx(2.0 * 0.5**2)
    assert set(_lrs("constant", 5, 0)) == {2.0}


@pytest.mark.parametrize("name", optim.SCHEDULES.names())
def test_every_schedule_builds_and_stays_positive_under_peak(name):
    lrs = _lrs(name, 50, optim.warmup_steps_for(50, 0, 0.1, name))
    assert all(0 <= lr <= 2.0 + 1e-9 for lr in lrs)


def test_onecycle_defaults_to_thirty_percent_warmup():
    assert optim.warmup_steps_for(1000, 0, 0.0, "onecycle") == 300
    assert optim.warmup_steps_for(1000, 0, 0.0, "cosine") == 0
    assert optim.warmup_steps_for(1000, 50, 0.5, "cosine") == 50
    assert optim.warmup_steps_for(1000, 0, 0.25, "cosine") == 250


def test_nesterov_needs_momentum():
    with pytest.raises(UsageError, match="nesterov needs momentum"):
        optim.build_optimizer("sgd", tiny_net(), lr=0.1, weight_decay=0.0, decay_norm_and_bias=False,
                              momentum=0.0, nesterov=True)
