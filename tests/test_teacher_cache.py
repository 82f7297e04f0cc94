import shutil

import pytest
import torch

from distill import teacher_cache
from distill.checkpoint import model_from_checkpoint
from distill.data import ImageDataModule
from distill.models.tta import TestTimeAugmented, average_logits
from distill.modules import DistillModule
from distill.train import main
from tests.conftest import fast

NO_CACHE = shutil.ignore_patterns(teacher_cache.CACHE_DIR)  # copies of a teacher run start without caches


@pytest.fixture(scope="module")
def flip_teacher_run(tmp_path_factory):
    """A tiny teacher whose stage used flip test-time augmentation: its checkpoint is a flip-averaged classifier."""
    run_dir = tmp_path_factory.mktemp("flip_teacher")
    assert main(["teacher", "--model.model", "cnn_tiny", "--model.tta", "flip", "--run_dir", str(run_dir),
                 *fast()]) == 0
    return run_dir


def test_cached_logits_equal_fresh_ones(teacher_run):
    data = ImageDataModule(eval_batch_size=5000)
    teacher, _ = model_from_checkpoint(teacher_run / "best.ckpt")
    batches = ((data.transform(x, train=False), idx) for x, idx in data.training_images())
    table = teacher_cache.compute_logits(teacher, batches, data.num_training_images(), torch.device("cpu"))
    assert table.shape == (60000, 10)
    idx = torch.tensor([0, 17, 59999, 31337])
    with torch.no_grad():
        fresh = teacher(data.transform(data.train_set.images[idx], train=False))
    assert torch.allclose(table[idx], fresh, atol=1e-5)


def test_cache_is_keyed_by_teacher_and_data(teacher_run, tmp_path):
    data = ImageDataModule()
    path = teacher_cache.cache_path(teacher_run / "best.ckpt", data.fingerprint())
    assert path == teacher_cache.cache_path(teacher_run / "best.ckpt", data.fingerprint())
    other_teacher = tmp_path / "best.ckpt"
    shutil.copy(teacher_run / "best.ckpt", other_teacher)
    assert teacher_cache.cache_path(other_teacher, data.fingerprint()).name == path.name  # same bytes, same key
    state = torch.load(other_teacher, weights_only=True)
    state["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, other_teacher)
    assert teacher_cache.cache_path(other_teacher, data.fingerprint()).name != path.name  # changed teacher
    assert teacher_cache.cache_path(teacher_run / "best.ckpt", "other data").name != path.name  # changed data


def test_corrupt_cache_reads_as_missing(tmp_path):
    path = tmp_path / "c.pt"
    teacher_cache.save(torch.ones(3, 2), path)
    assert torch.equal(teacher_cache.load(path), torch.ones(3, 2))
    path.write_bytes(path.read_bytes()[:20])
    assert teacher_cache.load(path) is None


def _fit_student(teacher_ckpt, data, tmp_path, **kwargs) -> DistillModule:
    from lightning.pytorch import Trainer

    module = DistillModule(model="cnn_tiny", teacher_ckpt=str(teacher_ckpt), num_classes=10, input_shape=(1, 28, 28),
                           **kwargs)
    trainer = Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    return module


# (augment, crop_padding) -> whether the cache serves a plain teacher, and a flip-averaged one
@pytest.mark.parametrize("augment, crop_padding, plain_cached, flip_cached", [
    (False, None, True, True),  # no augmentation: every teacher's targets are fixed
    (True, 0, False, True),  # flips only: a flip-averaged teacher gives an image and its mirror one target
    (True, None, False, False),  # crops move the image: no teacher here is invariant to that
])
def test_student_caches_the_teacher_only_where_its_targets_cannot_vary(
        teacher_run, flip_teacher_run, tmp_path, augment, crop_padding, plain_cached, flip_cached):
    for source, expect_cache in ((teacher_run, plain_cached), (flip_teacher_run, flip_cached)):
        run_dir = tmp_path / source.name
        shutil.copytree(source, run_dir, ignore=NO_CACHE)  # keep the session's teacher directories free of caches
        data = ImageDataModule(augment=augment, crop_padding=crop_padding, batch_size=64)
        module = _fit_student(run_dir / "best.ckpt", data, tmp_path)
        assert (module.cached_logits is not None) == expect_cache
        assert len(list((run_dir / teacher_cache.CACHE_DIR).glob("*.pt"))) == int(expect_cache)


def test_flip_teacher_cache_holds_flip_averaged_logits(flip_teacher_run, tmp_path):
    run_dir = tmp_path / "t"
    shutil.copytree(flip_teacher_run, run_dir, ignore=NO_CACHE)
    data = ImageDataModule(augment=True, crop_padding=0, batch_size=64)
    module = _fit_student(run_dir / "best.ckpt", data, tmp_path)
    teacher, _ = model_from_checkpoint(run_dir / "best.ckpt")
    assert isinstance(teacher, TestTimeAugmented) and module.teacher_tta == "flip"
    idx = torch.tensor([3, 40000])
    images = data.transform(data.train_set.images[idx], train=False)
    with torch.no_grad():
        expected = average_logits(teacher.model, images, "flip")
        assert torch.allclose(module.cached_logits[idx], expected, atol=1e-5)
        assert torch.allclose(module.cached_logits[idx], teacher(images.flip(3)), atol=1e-5)  # the mirror's target too


def test_student_side_teacher_tta_overrides_the_teachers_own_and_keys_its_cache(teacher_run, tmp_path):
    run_dir = tmp_path / "t"
    shutil.copytree(teacher_run, run_dir, ignore=NO_CACHE)  # a teacher whose own stage used no test-time augmentation
    data = ImageDataModule(augment=True, crop_padding=0, batch_size=64)
    module = _fit_student(run_dir / "best.ckpt", data, tmp_path, teacher_tta="flip_shift")
    assert module.teacher_tta == "flip_shift" and module.cached_logits is not None  # flips only: cached
    network, _ = model_from_checkpoint(run_dir / "best.ckpt")
    idx = torch.tensor([5, 123])
    images = data.transform(data.train_set.images[idx], train=False)
    # The teacher stage ran through the CLI, which records the data's crop fill (black) for shifted views.
    assert module.teacher_fill == data.crop_fill
    with torch.no_grad():
        expected = average_logits(network, images, "flip_shift", data.crop_fill)
        assert torch.allclose(module.cached_logits[idx], expected, atol=1e-5)
        assert not torch.allclose(expected, average_logits(network, images, "flip_shift"), atol=1e-4)  # edge: differs
    plain = _fit_student(run_dir / "best.ckpt", ImageDataModule(batch_size=64), tmp_path)
    assert plain.teacher_tta == "none"
    with torch.no_grad():
        assert torch.allclose(plain.cached_logits[idx], network(images), atol=1e-5)
    assert len(list((run_dir / teacher_cache.CACHE_DIR).glob("*.pt"))) == 2  # one cache per view set
    # Another border fill is another function of the image: its own cache, with its own targets.
    gray = _fit_student(run_dir / "best.ckpt", data, tmp_path, teacher_tta="flip_shift", tta_fill=(0.0,))
    assert gray.teacher_fill == (0.0,)
    assert not torch.allclose(gray.cached_logits[idx], module.cached_logits[idx], atol=1e-4)
    assert len(list((run_dir / teacher_cache.CACHE_DIR).glob("*.pt"))) == 3
