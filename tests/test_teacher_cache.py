import shutil

import numpy as np
import pytest
import torch

from distill.teacher import cache as teacher_cache
from distill.checkpoint import model_from_checkpoint
from distill.data import ImageDataModule
from distill.features import FeatureRecorder
from distill.losses import KD
from distill.models import create_model
from distill.models.tta import average_logits
from distill.modules import DistillModule
from distill.teacher.cache import LogitTable, TeacherCache, build_table, cache_path, open_table

NO_CACHE = shutil.ignore_patterns(teacher_cache.CACHE_DIR)  # copies of a teacher run start without caches


def test_cached_logits_equal_fresh_ones(teacher_run, tmp_path):
    data = ImageDataModule(eval_batch_size=5000)
    teacher, _ = model_from_checkpoint(teacher_run / "best.ckpt")
    path = tmp_path / "table.npy"
    build_table(teacher, data.training_inputs(), data.num_training_samples(), path)
    table = open_table(path, memory_limit_mb=1024)
    assert table is not None and table.in_memory and table.shape == (60000, 10)
    idx = torch.tensor([0, 17, 59999, 31337])
    with torch.no_grad():
        fresh = teacher(data.transform(data.train_set.images[idx], train=False))
    assert torch.allclose(table[idx], fresh, atol=1e-5)
    # Above the memory limit the same file is memory-mapped and read row by row: the same rows.
    mapped = open_table(path, memory_limit_mb=0)
    assert not mapped.in_memory and isinstance(mapped._array, np.memmap)
    assert torch.equal(mapped[idx], table[idx])
    # float16 storage: half the bytes, the same logits to fp16 precision.
    half = tmp_path / "half.npy"
    build_table(teacher, data.training_inputs(), data.num_training_samples(), half, dtype="float16")
    assert half.stat().st_size < 0.51 * path.stat().st_size
    assert torch.allclose(open_table(half, 1024)[idx], fresh, atol=2e-2, rtol=1e-3)


def test_table_build_is_chunked_and_leaves_nothing_when_interrupted(tmp_path):
    teacher = torch.nn.Linear(3, 2)

    def batches():
        yield torch.randn(4, 3), torch.arange(4)
        raise KeyboardInterrupt  # killed halfway

    path = tmp_path / "t.npy"
    with pytest.raises(KeyboardInterrupt):
        build_table(teacher, batches(), 8, path)
    assert list(tmp_path.iterdir()) == []  # no partial table under any name (atomic_write cleans up)


def test_cache_is_keyed_by_teacher_and_data(teacher_run, tmp_path):
    def identity(**teacher):
        return DistillModule(model="cnn_tiny", num_classes=10, input_shape=(1, 28, 28), **teacher).teacher.identity()

    original = identity(teacher=str(teacher_run / "best.ckpt"))
    other_teacher = tmp_path / "best.ckpt"
    shutil.copy(teacher_run / "best.ckpt", other_teacher)
    assert identity(teacher_ckpt=str(other_teacher)) == original  # same bytes, same key
    state = torch.load(other_teacher, weights_only=True)
    state["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, other_teacher)
    assert identity(teacher=str(other_teacher)) != original  # changed teacher
    assert identity(teacher=str(teacher_run / "best.ckpt"), teacher_input_size=32) != original  # changed adapters
    # A built teacher: keyed by its spec, adapters and weights.
    weights = tmp_path / "w.pt"
    torch.save(create_model("cnn_tiny", num_classes=10, in_channels=1).state_dict(), weights)
    built = identity(teacher="registry:cnn_tiny", teacher_weights=str(weights))
    assert built == identity(teacher="registry:cnn_tiny", teacher_weights=str(weights))
    torch.save(create_model("cnn_tiny", num_classes=10, in_channels=1).state_dict(), weights)  # other init
    assert built != identity(teacher="registry:cnn_tiny", teacher_weights=str(weights))
    # And the data: a different key gives a different table.
    assert cache_path(tmp_path, original, "data-a") != cache_path(tmp_path, original, "data-b")


def test_corrupt_cache_reads_as_missing(tmp_path):
    path = tmp_path / "c.npy"
    build_table(torch.nn.Identity(), [(torch.ones(3, 2), torch.arange(3))], 3, path)
    assert torch.equal(open_table(path, 1024)[torch.arange(3)], torch.ones(3, 2))
    path.write_bytes(path.read_bytes()[:20])
    assert open_table(path, 1024) is None


def test_logit_table_lookup_returns_float32_on_the_indices_device():
    table = LogitTable(np.arange(12, dtype=np.float16).reshape(6, 2))
    rows = table[torch.tensor([5, 0])]
    assert rows.dtype == torch.float32 and rows.tolist() == [[10.0, 11.0], [0.0, 1.0]]


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
        teacher_run, tmp_path, augment, crop_padding, plain_cached, flip_cached):
    for views, expect_cache in (("none", plain_cached), ("flip", flip_cached)):
        run_dir = tmp_path / views
        shutil.copytree(teacher_run, run_dir, ignore=NO_CACHE)  # keep the session's teacher directory free of caches
        data = ImageDataModule(augment=augment, crop_padding=crop_padding, batch_size=64)
        module = _fit_student(run_dir / "best.ckpt", data, tmp_path, teacher_tta=views)
        assert (module.cached_logits is not None) == expect_cache
        assert len(list((run_dir / teacher_cache.CACHE_DIR).glob("*.npy"))) == int(expect_cache)


def test_teacher_views_key_the_cache_and_shifted_views_use_the_datas_border(teacher_run, tmp_path):
    run_dir = tmp_path / "t"
    shutil.copytree(teacher_run, run_dir, ignore=NO_CACHE)
    data = ImageDataModule(augment=True, crop_padding=0, batch_size=64)
    module = _fit_student(run_dir / "best.ckpt", data, tmp_path, teacher_tta="flip_shift")
    assert module.teacher.tta == "flip_shift" and module.cached_logits is not None  # flips only: cached
    assert module.teacher.fill == data.border_fill == pytest.approx((-0.2860 / 0.3530,))  # a black pixel
    network, _ = model_from_checkpoint(run_dir / "best.ckpt")
    idx = torch.tensor([5, 123])
    images = data.transform(data.train_set.images[idx], train=False)
    with torch.no_grad():
        expected = average_logits(network, images, "flip_shift", data.border_fill)
        assert torch.allclose(module.cached_logits[idx], expected, atol=1e-5)
        assert torch.allclose(module.cached_logits[idx], average_logits(network, images.flip(3), "flip_shift",
                                                                        data.border_fill), atol=1e-5)  # the mirror too
        assert not torch.allclose(expected, average_logits(network, images, "flip_shift"), atol=1e-4)  # edge: differs
    plain = _fit_student(run_dir / "best.ckpt", ImageDataModule(batch_size=64), tmp_path)
    assert plain.teacher.tta == "none"
    with torch.no_grad():
        assert torch.allclose(plain.cached_logits[idx], network(images), atol=1e-5)
    assert len(list((run_dir / teacher_cache.CACHE_DIR).glob("*.npy"))) == 2  # one cache per view set
    # A float16 table is another file, with the same targets to fp16 precision.
    half = _fit_student(run_dir / "best.ckpt", ImageDataModule(batch_size=64), tmp_path, teacher_cache_dtype="float16")
    assert torch.allclose(half.cached_logits[idx], plain.cached_logits[idx], atol=2e-2)
    assert len(list((run_dir / teacher_cache.CACHE_DIR).glob("*.npy"))) == 3


def test_teacher_feature_maps_run_the_teacher_online_and_pooled_vectors_are_cached(teacher_run, tmp_path):
    class WithTeacherMaps(KD):
        teacher_features = ("stage2",)

    class WithPooledTeacherVectors(KD):
        teacher_features = ("penultimate",)

    run_dir = tmp_path / "t"
    shutil.copytree(teacher_run, run_dir, ignore=NO_CACHE)
    module = _fit_student(run_dir / "best.ckpt", ImageDataModule(batch_size=64), tmp_path, method=WithTeacherMaps())
    assert module.cached_logits is None and not (run_dir / teacher_cache.CACHE_DIR).exists()
    assert TeacherCache().reason_not_cached(module.table_request(), ImageDataModule()) == (
        "the method reads the teacher's intermediate feature maps, too large to cache")
    assert isinstance(module.teacher_recorder, FeatureRecorder)
    pooled = _fit_student(run_dir / "best.ckpt", ImageDataModule(batch_size=64), tmp_path / "p",
                          method=WithPooledTeacherVectors())
    width = pooled.cached_feature_widths["penultimate"]
    assert pooled.cached_logits is not None and pooled.cached_logits[torch.arange(2)].shape == (2, 10 + width)
