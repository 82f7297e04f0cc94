import pytest
import torch

from distill.errors import UsageError
from distill.models.trees import LIBRARIES
from distill.models import count_parameters, create_model, list_models
from distill.models import tta as tta_module
from distill.models.tta import TTA_VIEWS, describe, shift, with_tta

# Parameter counts at 100 classes as cited in the CRD/DKD papers (../shared/ANCHORS.md), in millions.
PUBLISHED_MILLIONS = {
    "resnet20": 0.28, "resnet32": 0.47, "resnet56": 0.86, "resnet110": 1.7, "resnet8x4": 1.2,
    "resnet32x4": 7.4, "wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.2, "vgg8": 3.9, "vgg13": 9.4,
    "resnet18": 11.2,
}


# Side of each stage's output map on a 32-pixel CIFAR image, as in RepDistiller's and mdistiller's models.
PUBLISHED_STAGE_SIDES = {
    "vgg8": [32, 16, 8, 4, 4], "vgg11": [32, 16, 8, 4, 4], "vgg13": [32, 16, 8, 4, 4],
    "resnet8x4": [32, 16, 8], "resnet32x4": [32, 16, 8], "resnet20": [32, 16, 8], "resnet110": [32, 16, 8],
    "wrn_16_2": [32, 16, 8], "wrn_40_2": [32, 16, 8], "resnet18": [32, 16, 8, 4],
}


def _input_for(name: str) -> tuple[int, torch.Tensor]:
    if name.startswith("mlp"):  # table rows: in_channels is the row's width
        return 10, torch.randn(2, 10)
    if name.startswith("cnn"):
        return 1, torch.randn(2, 1, 28, 28)
    return 3, torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("name", [m for m in list_models() if m not in LIBRARIES])  # networks, not fitted trees
def test_forward_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    in_channels, x = _input_for(name)
    model = create_model(name, num_classes=7, in_channels=in_channels)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", sorted(PUBLISHED_STAGE_SIDES))
def test_cifar_stages_run_at_the_published_map_sizes(name):
    from distill.features import FeatureRecorder, feature_aliases, probe_shapes

    model = create_model(name, num_classes=100, in_channels=3)
    stages = sorted((a for a in feature_aliases(model) if a.startswith("stage")), key=lambda a: int(a[5:]))
    _, shapes = probe_shapes(model, FeatureRecorder(model, stages), (3, 32, 32))
    assert [shapes[a][-1] for a in stages] == PUBLISHED_STAGE_SIDES[name]


def test_vgg_pools_before_its_fourth_stage_on_64_pixel_inputs():
    from distill.features import FeatureRecorder, probe_shapes

    model = create_model("vgg8", num_classes=100, in_channels=3)
    _, shapes = probe_shapes(model, FeatureRecorder(model, ["stage4", "stage5"]), (3, 64, 64))
    assert (shapes["stage4"][-1], shapes["stage5"][-1]) == (8, 4)  # 64, 32, 16, 8, then pooled to 4


@pytest.mark.parametrize("name", sorted(PUBLISHED_MILLIONS))
def test_parameter_counts_match_the_published_tables(name):
    count = count_parameters(create_model(name, num_classes=100, in_channels=3)) / 1e6
    assert count == pytest.approx(PUBLISHED_MILLIONS[name], rel=0.03)


@pytest.mark.parametrize(("teacher_name", "student_name"),
                         [("cnn_wide", "cnn_small"), ("cnn_deep", "cnn_small"), ("cnn_deep", "cnn_medium"),
                          ("cnn_deep", "cnn_narrow"), ("cnn_deep", "cnn_mini")])
def test_fashion_mnist_student_is_a_tenth_of_the_teacher(teacher_name, student_name):
    teacher = count_parameters(create_model(teacher_name, num_classes=10, in_channels=1))
    student = count_parameters(create_model(student_name, num_classes=10, in_channels=1))
    assert student * 10 <= teacher


def test_models_accept_grey_28x28_inputs():
    model = create_model("resnet8x4", num_classes=10, in_channels=1)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UsageError, match="unknown model 'resnet9000'; valid: .*resnet20"):
        create_model("resnet9000", num_classes=10)


def test_unknown_option_is_a_usage_error():
    with pytest.raises(UsageError, match="does not take"):
        create_model("resnet20", num_classes=10, bn=False)


def test_bn_and_dropout_are_factory_arguments():
    plain = create_model("cnn_small", num_classes=10, in_channels=1, bn=False, dropout=0.5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in plain.modules())


def test_shift_moves_content_and_repeats_edges():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(shift(x, 1, 0)[0, 0, :, 1:], x[0, 0, :, :3]) and torch.equal(shift(x, 1, 0)[..., 0], x[..., 0])
    assert torch.equal(shift(x, 0, -1)[0, 0, :3], x[0, 0, 1:]) and torch.equal(shift(x, 0, -1)[..., 3, :], x[..., 3, :])
    assert shift(x, 0, 0) is x


def test_shift_fills_the_uncovered_border_with_the_given_value_per_channel():
    x = torch.arange(32.0).view(1, 2, 4, 4)
    moved = shift(x, -1, 1, fill=(-5.0, 7.0))  # left and down
    assert torch.equal(moved[0, :, 1:, :3], x[0, :, :3, 1:])
    assert (moved[0, 0, 0] == -5.0).all() and (moved[0, 0, :, 3] == -5.0).all()
    assert (moved[0, 1, 0] == 7.0).all() and (moved[0, 1, :, 3] == 7.0).all()


def test_describe_names_the_fill_only_where_views_are_shifted():
    black = (-0.81,)
    assert describe("none", black) == "none" and describe("flip", black) == "flip"
    assert describe("flip_shift", None) != describe("flip_shift", black) != describe("flip_shift", (0.0,))


@pytest.mark.parametrize("tta", ["flip", "flip_shift"])
def test_test_time_augmentation_averages_its_views_and_is_blind_to_mirroring(tta):
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=10, in_channels=1).eval()
    x = torch.randn(4, 1, 28, 28)
    averaged = with_tta(model, tta)
    with torch.no_grad():
        out = averaged(x)
        views = [shift(x, dx, dy) for dx, dy, _ in TTA_VIEWS[tta]]
        expected = torch.stack([model(v.flip(3) if m else v) for v, (*_, m) in zip(views, TTA_VIEWS[tta])]).mean(0)
        assert torch.allclose(out, expected, atol=1e-6)
        assert not torch.allclose(out, model(x), atol=1e-4)  # the views do change this network's logits
        assert torch.allclose(averaged(x.flip(3)), out, atol=1e-5)  # a mirror sees the same set of views
    assert isinstance(averaged, tta_module.TestTimeAugmented) and averaged.invariant_to == {"hflip"}
    assert count_parameters(averaged) == count_parameters(model)


def test_no_test_time_augmentation_is_the_model_itself_and_unknown_names_list_the_valid_ones():
    model = create_model("cnn_tiny", num_classes=10, in_channels=1)
    assert with_tta(model, "none") is model
    with pytest.raises(UsageError, match="unknown test-time augmentation 'rotate'; valid: none, flip, flip_shift"):
        with_tta(model, "rotate")


def test_the_tabular_student_is_under_a_tenth_of_the_tabular_teacher():
    for width in (8, 20, 60):
        teacher = count_parameters(create_model("mlp_wide", num_classes=3, in_channels=width))
        student = count_parameters(create_model("mlp_small", num_classes=3, in_channels=width))
        assert student * 10 <= teacher
