"""Every shipped recipe parses, and every student recipe points at a teacher recipe beside it."""

from pathlib import Path

import pytest
import yaml

from distill.models import count_parameters, create_model, list_models
from distill.train import main

TEACHERS = Path(__file__).resolve().parents[1] / "teachers"
RECIPES = sorted(TEACHERS.rglob("*.yaml"))


def stage_of(path: Path) -> str:
    if path.stem.endswith("-pruned"):
        return "prune"
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
    if stage_of(path) == "prune":  # the architecture is the source checkpoint's
        assert printed["model"]["source_ckpt"] == recipe["model"]["source_ckpt"]
    else:
        assert printed["model"]["model"] == recipe["model"]["model"] in list_models()
    assert printed["data"]["class_path"] == "distill.data.ImageDataModule"  # the default DataModule
    assert printed["data"]["init_args"]["dataset"] == path.parent.name


@pytest.mark.parametrize("path", [p for p in RECIPES if stage_of(p) == "prune"], ids=lambda p: p.name)
def test_prune_recipe_prunes_the_student_recipe_beside_it_against_its_teacher(path):
    student_recipe = path.with_name(path.stem.removesuffix("-pruned") + ".yaml")
    student, prune = yaml.safe_load(student_recipe.read_text()), yaml.safe_load(path.read_text())
    assert prune["model"]["source_ckpt"] == f"{student['run_dir']}/best.ckpt"
    assert prune["model"]["teacher_ckpt"] == student["model"]["teacher_ckpt"]


@pytest.mark.parametrize("path", [p for p in RECIPES if stage_of(p) == "student"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_student_recipe_has_its_teacher_beside_it(path):
    teacher_name, student_name = path.stem.split("-to-")
    teacher_recipe = path.parent / f"{teacher_name}.yaml"
    assert teacher_recipe.is_file()
    teacher = yaml.safe_load(teacher_recipe.read_text())
    student = yaml.safe_load(path.read_text())
    # A recipe variant carries a suffix after the architecture: cnn_deep-full.yaml trains cnn_deep.
    assert teacher["model"]["model"] == teacher_name.split("-")[0] and student["model"]["model"] == student_name
    assert student["model"]["teacher_ckpt"] == f"{teacher['run_dir']}/best.ckpt"


FASHION_MNIST_STUDENTS = [p for p in RECIPES if stage_of(p) == "student" and p.parent.name == "fashion_mnist"]
assert FASHION_MNIST_STUDENTS


@pytest.mark.parametrize("path", FASHION_MNIST_STUDENTS, ids=lambda p: p.name)
def test_fashion_mnist_student_recipe_is_at_most_a_tenth_of_its_teacher(path):
    # The Fashion-MNIST recipes promise a student of at most 1/10 of the teacher's parameters (issue #8).
    teacher_name, student_name = (name.split("-")[0] for name in path.stem.split("-to-"))
    teacher = count_parameters(create_model(teacher_name, num_classes=10, in_channels=1))
    student = count_parameters(create_model(student_name, num_classes=10, in_channels=1))
    assert student * 10 <= teacher


def contains(big, small) -> bool:
    """Whether every value of the (nested) mapping ``small`` is in ``big``."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v) for k, v in small.items())
    return big == small


@pytest.mark.parametrize(("stage", "recipe"), [("teacher", "cnn_wide.yaml"), ("student", "cnn_wide-to-cnn_mini.yaml"),
                                              ("prune", "cnn_wide-to-cnn_mini-pruned.yaml")])
def test_bare_command_runs_the_demo_recipe_file(stage, recipe, capsys):
    # The demo's numbers are written once, in its recipe: the bare command reads that file as its defaults.
    from distill.cli import STAGES

    path = TEACHERS / "fashion_mnist" / recipe
    assert STAGES[stage][2] == path
    with pytest.raises(SystemExit) as exit_info:
        main([stage, "--print_config"])
    assert exit_info.value.code == 0
    bare = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(path.read_text())
    # A recipe's data section holds the arguments of the default DataModule (images).
    written["data"] = {"class_path": "distill.data.ImageDataModule", "init_args": written["data"]}
    assert contains(bare, written)
