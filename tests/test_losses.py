import math

import pytest
import torch
import torch.nn.functional as F

from distill.errors import UsageError
from distill.features import FeatureRecorder, probe_shapes
from distill.losses import (DISTILLERS, DKD, KD, LabelMixedDistiller, Outputs, RegressionKD, dkd_loss, kd_loss, method_name,
                            standardize_logits)
from distill.models import create_model


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
def test_every_method_returns_named_scalar_terms_on_real_networks(name):
    torch.manual_seed(0)
    regression = "classification" not in DISTILLERS.get(name).tasks
    outputs_width = 1 if regression else 5  # a regression network has one output
    student_net = create_model("cnn_tiny", num_classes=outputs_width, in_channels=1)
    teacher_net = create_model("cnn_small", num_classes=outputs_width, in_channels=1).eval()
    method = DISTILLERS.get(name)()
    shapes = []
    recorders = []
    for net, names in ((student_net, method.student_features), (teacher_net, method.teacher_features)):
        recorder = FeatureRecorder(net, names) if names else None
        logits, features = probe_shapes(net, recorder, (1, 28, 28)) if recorder else (torch.Size([2, outputs_width]), {})
        shapes.append({"logits": logits, **features})
        recorders.append(recorder)
    method.build(*shapes)
    x, labels = torch.randn(8, 1, 28, 28), (torch.randn(8) if regression else torch.randint(0, 5, (8,)))
    outputs = []
    for net, recorder in zip((student_net, teacher_net), recorders):
        if recorder is None:
            outputs.append(Outputs(net(x)))
        else:
            with recorder:
                logits = net(x)
            outputs.append(Outputs(logits, recorder.pop()))
    terms = method(outputs[0], Outputs(outputs[1].logits.detach(), {k: v.detach() for k, v in outputs[1].features.items()}),
                   labels)
    supervised = "mse" if regression else "ce"  # the labels' own term
    assert supervised in terms and len(terms) >= 2 and all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in student_net.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in method.parameters())  # learnable parts take part in the loss
    # Every teacher weight at 0: the student alone, and the teacher is not needed.
    alone = DISTILLERS.get(name)(**{w: 0.0 for w in method.teacher_weights})
    assert method.teacher_weights and not alone.needs_teacher


def test_kd_is_tckd_plus_nckd_weighted_by_the_teachers_non_target_mass():
    # The decomposition DKD starts from (Zhao et al. 2022, eq. 5), per sample: KD = TCKD + (1 - p_t) NCKD.
    torch.manual_seed(0)
    student, teacher = 3 * torch.randn(6, 10), 3 * torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,))
    t = 2.0
    for i in range(6):
        s, te, y = student[i : i + 1], teacher[i : i + 1], labels[i : i + 1]
        tckd, nckd = dkd_loss(s, te, y, t, beta=1.0)
        p_target = torch.softmax(te / t, dim=1)[0, y[0]]
        assert kd_loss(s, te, t).item() == pytest.approx((tckd + (1 - p_target) * nckd).item(), rel=1e-4)


def test_dkd_is_zero_for_equal_logits_and_stable_for_confident_ones():
    logits = torch.tensor([[30.0, -30.0, 0.0], [0.0, 0.0, 60.0]])
    labels = torch.tensor([0, 2])
    tckd, nckd = dkd_loss(logits, logits.clone(), labels, 1.0, beta=8.0)
    assert tckd.item() == pytest.approx(0.0, abs=1e-6) and nckd.item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 3, requires_grad=True)
    sum(dkd_loss(student, logits, labels, 1.0, beta=8.0)).backward()
    assert torch.isfinite(student.grad).all()


def test_dkd_nckd_scales_with_beta_and_terms_mix_by_alpha():
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    tckd, nckd = dkd_loss(student, teacher, labels, 4.0, beta=1.0)
    terms = DKD(temperature=4.0, alpha=0.4, beta=8.0)(Outputs(student), Outputs(teacher), labels)
    assert set(terms) == {"ce", "tckd", "nckd"}
    assert terms["tckd"].item() == pytest.approx(0.4 * tckd.item(), rel=1e-5)
    assert terms["nckd"].item() == pytest.approx(0.4 * 8.0 * nckd.item(), rel=1e-5)
    assert terms["ce"].item() == pytest.approx(0.6 * F.cross_entropy(student, labels).item(), rel=1e-5)
    assert not DKD(alpha=0.0).needs_teacher


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"alpha": 1.5}, {"beta": -1.0}])
def test_dkd_rejects_bad_arguments(kwargs):
    with pytest.raises(UsageError):
        DKD(**kwargs)


def test_registry_names_map_to_import_paths_and_back():
    assert DISTILLERS.import_path("dkd") == "distill.losses.dkd.DKD"
    assert DISTILLERS.import_path("my.pkg.Method") == "my.pkg.Method"
    assert method_name(DKD()) == "dkd" and method_name(KD()) == "kd"
    with pytest.raises(UsageError, match="unknown distillation method 'fitnets'; valid: at, crd, dist, dkd, fitnet, kd, regression_kd"):
        DISTILLERS.import_path("fitnets")


@pytest.mark.parametrize("name", DISTILLERS.names())
def test_every_method_has_paper_defaults_and_plain_settings(name):
    method = DISTILLERS.get(name)()
    settings = method.settings()
    plain = (bool, int, float, str, type(None))
    assert settings and all(isinstance(v, plain) or (isinstance(v, list) and all(isinstance(x, plain) for x in v))
                            for v in settings.values())


def test_regression_kd_mixes_the_teachers_and_the_targets_squared_errors():
    student, teacher, targets = torch.tensor([[1.0], [2.0], [0.0]]), torch.tensor([[0.0], [2.0], [1.0]]), torch.tensor([1.0, 1.0, 1.0])
    # MSE to the teacher: (1 + 0 + 1) / 3; to the targets: (0 + 1 + 1) / 3.
    terms = RegressionKD(alpha=0.25)(Outputs(student), Outputs(teacher), targets)
    assert terms["kd"].item() == pytest.approx(0.25 * 2 / 3) and terms["mse"].item() == pytest.approx(0.75 * 2 / 3)
    alone = RegressionKD(alpha=0.0)
    assert not alone.needs_teacher and set(alone(Outputs(student), None, targets)) == {"mse"}
    assert RegressionKD.tasks == ("regression",) and KD.tasks == ("classification",)
    with pytest.raises(UsageError):
        RegressionKD(alpha=1.5)


def test_standardize_logits_gives_zero_mean_unit_std_and_ignores_scale_and_shift():
    logits = 5 * torch.randn(6, 10) + 3
    z = standardize_logits(logits)
    assert torch.allclose(z.mean(1), torch.zeros(6), atol=1e-5) and torch.allclose(z.std(1), torch.ones(6), atol=1e-5)
    assert torch.allclose(standardize_logits(4 * logits - 7), z, atol=1e-5)
    assert torch.isfinite(standardize_logits(torch.ones(2, 10))).all()  # equal logits: no division by zero


@pytest.mark.parametrize("name", [n for n in DISTILLERS.names() if issubclass(DISTILLERS.get(n), LabelMixedDistiller)])
def test_logit_standardization_matches_scale_not_logits_and_leaves_the_labels_term(name):
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    method = DISTILLERS.get(name)(temperature=2.0, alpha=0.6, logit_standardize=True)
    terms = method(Outputs(student), Outputs(teacher), labels)
    # A student whose logits are the teacher's scaled and shifted has nothing left to learn from it.
    matched = method(Outputs(3 * teacher + 1), Outputs(teacher), labels)
    assert all(matched[k].item() == pytest.approx(0.0, abs=1e-5) for k in matched if k != "ce")
    plain = DISTILLERS.get(name)(temperature=2.0, alpha=0.6)
    assert any(plain(Outputs(3 * teacher + 1), Outputs(teacher), labels)[k].item() > 1e-3 for k in matched if k != "ce")
    assert terms["ce"].item() == pytest.approx(0.4 * F.cross_entropy(student, labels).item(), rel=1e-5)
    assert method.settings()["logit_standardize"] is True
