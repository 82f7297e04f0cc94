import shutil

import torch

from distill import teacher_cache
from distill.checkpoint import model_from_checkpoint
from distill.data import ImageDataModule
from distill.modules import DistillModule


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


def test_student_uses_the_cache_only_without_augmentation(teacher_run, tmp_path):
    from lightning.pytorch import Trainer

    run_dir = tmp_path / "t"
    shutil.copytree(teacher_run, run_dir)  # keep the session's teacher directory free of caches
    for augment, expect_cache in ((False, True), (True, False)):
        module = DistillModule(model="cnn_tiny", teacher_ckpt=str(run_dir / "best.ckpt"), num_classes=10,
                               input_shape=(1, 28, 28))
        data = ImageDataModule(augment=augment, batch_size=64)
        trainer = Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(module, datamodule=data)
        assert (module.cached_logits is not None) == expect_cache
    assert len(list((run_dir / teacher_cache.CACHE_DIR).glob("*.pt"))) == 1
