"""Every shipped recipe parses, and every student recipe points at a teacher recipe beside it."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from distill.cli import STAGES
from distill.data import ImageDataModule, TabularDataModule
from distill.losses import DISTILLERS
from distill.models import count_parameters, create_model, list_models
from distill.train import main

TEACHERS = Path(__file__).resolve().parents[1] / "teachers"
RECIPES = sorted(TEACHERS.rglob("*.yaml"))


TABLES = ("penguins", "diabetes", "randhie")  # recipe folders of tables a package ships


SOURCED = {"-pruned": "prune", "-qat": "qat"}  # recipe suffix -> the stage that starts from a trained network


def stage_of(path: Path) -> str:
    suffix = next((s for s in SOURCED if path.stem.endswith(s)), None)
    if suffix is not None:
        return SOURCED[suffix]
    return "student" if "-to-" in path.stem else "teacher"


def test_recipes_exist():
    assert any(stage_of(p) == "teacher" for p in RECIPES) and any(stage_of(p) == "student" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=[f"{p.parent.name}/{p.name}" for p in RECIPES])
def test_recipe_parses(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([stage_of(path), "--config", str(path), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    recipe = yaml.safe_load(path.read_text())
    if stage_of(path) in SOURCED.values():  # the architecture is the source checkpoint's
        assert printed["model"]["source_ckpt"] == recipe["model"]["source_ckpt"]
    else:
        assert printed["model"]["model"] == recipe["model"]["model"] in list_models()
    module, _, name = printed["data"]["class_path"].rpartition(".")
    expected = TabularDataModule if path.parent.name in TABLES else ImageDataModule  # images: the default
    assert getattr(importlib.import_module(module), name) is expected
    assert printed["data"]["init_args"]["dataset"] == path.parent.name


@pytest.mark.parametrize("path", [p for p in RECIPES if stage_of(p) in SOURCED.values()], ids=lambda p: p.name)
def test_a_sourced_recipe_starts_from_the_student_recipe_beside_it_against_its_teacher(path):
    suffix = next(s for s in SOURCED if path.stem.endswith(s))
    student_recipe = path.with_name(path.stem.removesuffix(suffix) + ".yaml")
    student, sourced = yaml.safe_load(student_recipe.read_text()), yaml.safe_load(path.read_text())
    assert sourced["model"]["source_ckpt"] == f"{student['run_dir']}/best.ckpt"
    assert sourced["model"]["teacher"] == student["model"]["teacher"]


@pytest.mark.parametrize("path", [p for p in RECIPES if stage_of(p) == "student"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_student_recipe_has_its_teacher_beside_it(path):
    teacher_names, student_name = path.stem.split("-to-")
    student = yaml.safe_load(path.read_text())
    assert student["model"]["model"] == student_name.split("-")[0]
    checkpoints = []
    for teacher_name in teacher_names.split("+"):  # several teachers: a+b-to-c.yaml distills the ensemble of a and b
        teacher_recipe = path.parent / f"{teacher_name}.yaml"
        assert teacher_recipe.is_file()
        teacher = yaml.safe_load(teacher_recipe.read_text())
        # A recipe variant carries a suffix after the architecture: cnn_deep-full.yaml trains cnn_deep,
        # resnet32x4-to-resnet8x4-crd.yaml distills with CRD.
        assert teacher["model"]["model"] == teacher_name.split("-")[0]
        checkpoints.append(f"{teacher['run_dir']}/best.ckpt")
    assert student["model"]["teacher"] == (checkpoints if len(checkpoints) > 1 else checkpoints[0])


FASHION_MNIST_STUDENTS = [p for p in RECIPES if stage_of(p) == "student" and p.parent.name == "fashion_mnist"]
assert FASHION_MNIST_STUDENTS


@pytest.mark.parametrize("path", FASHION_MNIST_STUDENTS, ids=lambda p: p.name)
def test_fashion_mnist_student_recipe_is_at_most_a_tenth_of_its_teacher(path):
    # The Fashion-MNIST recipes promise a student of at most 1/10 of the teacher's parameters (issue #8).
    teacher_names, student_name = path.stem.split("-to-")
    student = count_parameters(create_model(student_name.split("-")[0], num_classes=10, in_channels=1))
    for teacher_name in teacher_names.split("+"):  # every member of an ensemble
        assert student * 10 <= count_parameters(create_model(teacher_name.split("-")[0], num_classes=10, in_channels=1))


def contains(big, small) -> bool:
    """Whether every value of the (nested) mapping ``small`` is in ``big``."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v) for k, v in small.items())
    return big == small


@pytest.mark.parametrize(("stage", "recipe"), [(stage, recipe.name) for stage, (_, _, recipe) in STAGES.items()])
def test_bare_command_runs_the_demo_recipe_file(stage, recipe, capsys):
    # The demo's numbers are written once, in its recipe: the bare command reads that file as its defaults.
    path = TEACHERS / "fashion_mnist" / recipe
    assert STAGES[stage][2] == path and stage_of(path) == stage
    with pytest.raises(SystemExit) as exit_info:
        main([stage, "--print_config"])
    assert exit_info.value.code == 0
    bare = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(path.read_text())
    # A recipe's data section holds the arguments of the default DataModule (images).
    written["data"] = {"class_path": "distill.data.ImageDataModule", "init_args": written["data"]}
    assert contains(bare, written)


@pytest.fixture(scope="module")
def cifar_like_folder(tmp_path_factory):
    """100 classes of random 32x32 colour images (two per class for training, one for testing): CIFAR-100's shape."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar_like")
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("test", 1)):
        for k in range(100):
            (root / split / f"c{k:03d}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / f"c{k:03d}" / f"{i}.png")
    return root


METHOD_RECIPES = [p for p in RECIPES if p.parent.name == "cifar100" and p.stem.rsplit("-", 1)[-1] in DISTILLERS.names()]
assert len(METHOD_RECIPES) == 16  # FitNets, AT, CRD and DIST on the four published pairs


@pytest.mark.parametrize("path", METHOD_RECIPES, ids=lambda p: p.stem)
def test_cifar100_method_recipe_takes_two_steps_on_random_32px_data(path, cifar_like_folder, tmp_path):
    # The teacher checkpoint is not here: a random teacher of the recipe's architecture stands in for it.
    teacher_arch = path.stem.split("-to-")[0]
    assert main(["student", "--config", str(path), "--model.teacher", f"registry:{teacher_arch}",
                 "--data.dataset", "image_folder", "--data.root", str(cifar_like_folder), "--data.image_size", "32",
                 "--data.batch_size", "8", "--data.num_workers", "0", "--trainer.max_steps", "2",
                 "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--trainer.logger", "false",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                 "--run_dir", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["method"] == path.stem.rsplit("-", 1)[-1]
