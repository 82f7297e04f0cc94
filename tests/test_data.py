import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import ImageDataModule, list_datasets
from distill.data import augment
from distill.data.sources import _read_idx
from distill.errors import UsageError
from distill.models.tta import shift


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion_mnist(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


@pytest.fixture
def fake_fashion_mnist(tmp_path: Path, monkeypatch) -> Path:
    """A Fashion-MNIST-shaped IDX set (random pixels) with the official file names and counts;
    the checksums of the real files are switched off for it."""
    import distill.data.sources as sources

    monkeypatch.setattr(sources, "FASHION_MNIST_SHA256", {})
    return write_fake_fashion_mnist(tmp_path)


def test_files_that_differ_from_the_published_ones_are_refused(tmp_path):
    write_fake_fashion_mnist(tmp_path)
    dm = ImageDataModule(root=str(tmp_path), download=False)
    with pytest.raises(UsageError, match="does not match the published file"):
        dm.setup("fit")


def test_idx_reader_round_trips(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    assert (_read_idx(tmp_path / "x.gz") == array).all()


def test_truncated_idx_is_a_clear_error(tmp_path):
    array = np.zeros((5, 28, 28), dtype=np.uint8)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(tmp_path / "x.gz", "wb") as f:
        f.write(header + array.tobytes()[:-10])
    with pytest.raises(UsageError, match="truncated"):
        _read_idx(tmp_path / "x.gz")


def test_split_is_seeded_disjoint_and_covers_train(fake_fashion_mnist):
    dm = ImageDataModule(root=str(fake_fashion_mnist), val_fraction=0.1, split_seed=3)
    dm.setup("fit")
    train, val = dm.train_set.indices, dm.val_set.indices
    assert len(val) == 6000 and len(train) == 54000
    assert len(set(train.tolist()) | set(val.tolist())) == 60000
    again = ImageDataModule(root=str(fake_fashion_mnist), val_fraction=0.1, split_seed=3)
    again.setup("fit")
    assert torch.equal(again.val_set.indices, val)
    other = ImageDataModule(root=str(fake_fashion_mnist), val_fraction=0.1, split_seed=4)
    other.setup("fit")
    assert not torch.equal(other.val_set.indices, val)


def test_val_fraction_zero_trains_on_everything_and_validates_on_the_test_set(fake_fashion_mnist):
    dm = ImageDataModule(root=str(fake_fashion_mnist), val_fraction=0.0)
    with pytest.warns(UserWarning, match="validating on the TEST set"):
        dm.setup("fit")
    assert len(dm.train_set.indices) == 60000
    val_labels = torch.cat([labels for _, labels, _ in dm.val_dataloader()])
    test_labels = torch.cat([labels for _, labels, _ in dm.test_dataloader()])
    assert torch.equal(val_labels, test_labels)


def test_epoch_order_depends_on_the_seed_and_the_epoch_only(fake_fashion_mnist):
    from distill.data.datamodule import EpochShuffle

    epoch = {"now": 0}
    sampler = EpochShuffle(1000, seed=7, epoch=lambda: epoch["now"])
    orders = []
    for e in range(4):
        epoch["now"] = e
        orders.append(list(sampler))
    assert all(sorted(order) == list(range(1000)) for order in orders) and orders[0] != orders[1]
    resumed = EpochShuffle(1000, seed=7, epoch=lambda: 2)  # a new process starting at epoch 2
    assert list(resumed) == orders[2]
    # Successive permutations of one seeded generator: the orders the published figures were measured with.
    generator = torch.Generator().manual_seed(7)
    assert [torch.randperm(1000, generator=generator).tolist() for _ in range(4)] == orders


def test_loaders_yield_every_sample_once(fake_fashion_mnist):
    dm = ImageDataModule(root=str(fake_fashion_mnist), batch_size=100, eval_batch_size=700)
    dm.setup("fit")
    seen = torch.cat([idx for _, _, idx in dm.train_dataloader()])
    assert len(seen) == 54000 and len(seen.unique()) == 54000  # 54000 = 540 full batches
    test_seen = torch.cat([idx for _, _, idx in dm.test_dataloader()])
    assert torch.equal(test_seen, torch.arange(10000))  # no padding, no drop, in order
    images, labels, idx = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (700, 1, 28, 28)
    assert torch.equal(labels, idx % 10)  # labels travel with their own samples


def test_transform_normalizes_and_augments_only_in_training(fake_fashion_mnist):
    dm = ImageDataModule(root=str(fake_fashion_mnist), augment=True)
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    evaluated = dm.transform(x, train=False)
    assert evaluated.dtype == torch.float32 and evaluated.shape == x.shape
    expected = (x.float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(evaluated, expected, atol=1e-5)
    torch.manual_seed(0)
    assert not torch.equal(dm.transform(x, train=True), evaluated)
    dm_plain = ImageDataModule(root=str(fake_fashion_mnist), augment=False)
    assert torch.equal(dm_plain.transform(x, train=True), evaluated)


def test_crop_padding_zero_leaves_mirroring_as_the_only_augmentation(fake_fashion_mnist):
    dm = ImageDataModule(root=str(fake_fashion_mnist), augment=True, crop_padding=0)
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    plain = dm.transform(x, train=False)
    out = dm.transform(x, train=True)
    mirrored = [torch.equal(o, p.flip(2)) and not torch.equal(o, p) for o, p in zip(out, plain)]
    assert all(m or torch.equal(o, p) for m, o, p in zip(mirrored, out, plain))  # never shifted
    assert 10 < sum(mirrored) < 54
    assert dm.random_transforms() == {"hflip"}
    assert ImageDataModule(root=str(fake_fashion_mnist), augment=True).random_transforms() == {"crop", "hflip"}
    assert ImageDataModule(root=str(fake_fashion_mnist), augment=False).random_transforms() == set()
    with pytest.raises(UsageError, match="crop_padding"):
        ImageDataModule(root=str(fake_fashion_mnist), crop_padding=-1)


def test_random_crop_shifts_content_and_keeps_shape():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    out = augment.random_crop(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert (out.sum(dim=(1, 2, 3)) <= 1).all()  # a pixel moved or fell off, never duplicated
    positions = {tuple(torch.nonzero(o[0])[0].tolist()) for o in out if o.sum() > 0}
    assert len(positions) > 1


def test_shifted_views_filled_with_the_border_fill_are_exact_training_crops(fake_fashion_mnist):
    data = ImageDataModule(root=str(fake_fashion_mnist), download=False)
    raw = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    padded = torch.nn.functional.pad(raw, (1, 1, 1, 1))  # what the training crop does: black border
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        crop = padded[..., 1 - dy : 29 - dy, 1 - dx : 29 - dx]
        assert torch.equal(shift(data.transform(raw, train=False), dx, dy, data.border_fill), data.transform(crop, train=False))


def test_hflip_mirrors_about_half():
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(200, 1, 1, 1)
    out = augment.random_hflip(x, generator=torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).sum().item()
    assert 60 < flipped < 140
    assert all(torch.equal(o, x[0]) or torch.equal(o, x[0].flip(2)) for o in out)


def test_incomplete_root_is_an_error_not_a_silent_fallback(tmp_path):
    write_fake_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UsageError, match="incomplete: missing t10k-labels-idx1-ubyte"):
        ImageDataModule(root=str(tmp_path), download=False).setup("fit")


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    import distill.data.sources as sources

    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setattr(sources, "DEFAULT_DOWNLOAD_ROOT", tmp_path / "nodata")
    dm = ImageDataModule(download=False)
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
        dm.setup("fit")
    with pytest.raises(UsageError, match="not found in .*empty"):
        ImageDataModule(root=str(tmp_path / "empty"), download=False).setup("fit")


def _write_fake_cifar(root: Path, n_train: int, n_test: int, classes: int) -> None:
    """Files in the layout torchvision reads (pickled dicts of numpy arrays)."""
    rng = np.random.default_rng(0)
    if classes == 10:
        folder, train_files, test_files, key = root / "cifar-10-batches-py", ["data_batch_1"], ["test_batch"], "labels"
    else:
        folder, train_files, test_files, key = root / "cifar-100-python", ["train"], ["test"], "fine_labels"
    folder.mkdir(parents=True)
    for files, n in ((train_files, n_train), (test_files, n_test)):
        for name in files:
            entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(np.arange(n) % classes)}
            with open(folder / name, "wb") as f:
                pickle.dump(entry, f)
    meta_name, meta_key = ("batches.meta", "label_names") if classes == 10 else ("meta", "fine_label_names")
    with open(folder / meta_name, "wb") as f:
        pickle.dump({meta_key: [f"c{i}" for i in range(classes)]}, f)


@pytest.mark.parametrize("dataset,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_through_torchvision_on_made_up_files(tmp_path, monkeypatch, dataset, classes):
    from torchvision import datasets

    klass = datasets.CIFAR10 if classes == 10 else datasets.CIFAR100
    monkeypatch.setattr(klass, "_check_integrity", lambda self: True)
    monkeypatch.setattr(klass, "meta", {**klass.meta, "md5": None})
    monkeypatch.setattr(klass, "train_list", [[n, None] for n in (["data_batch_1"] if classes == 10 else ["train"])])
    _write_fake_cifar(tmp_path, 200, 50, classes)
    dm = ImageDataModule(dataset=dataset, root=str(tmp_path), download=False, batch_size=16)
    assert dm.num_classes == classes and dm.input_shape == (3, 32, 32)
    dm.setup("fit")
    images, labels, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert len(dm.val_set) == 20 and len(dm.test_set) == 50


def test_missing_cifar_is_a_usage_error(tmp_path):
    dm = ImageDataModule(dataset="cifar10", root=str(tmp_path), download=False)
    with pytest.raises(UsageError, match="cifar10 not found"):
        dm.setup("fit")


def test_image_folder(tmp_path):
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), (i * 20, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    dm = ImageDataModule(dataset="image_folder", root=str(tmp_path), image_size=16, num_workers=0, batch_size=4,
                         val_fraction=0.25)
    assert dm.num_classes == 2 and dm.input_shape == (3, 16, 16)
    dm.setup("fit")
    images, labels, idx = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert len(dm.val_set) == 3 and len(dm.test_set) == 4


def test_image_folder_without_splits_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="train/ and test/"):
        ImageDataModule(dataset="image_folder", root=str(tmp_path))


@pytest.mark.parametrize("kwargs,match", [
    ({"dataset": "mnist3d"}, "unknown dataset 'mnist3d'; valid: cifar10, cifar100, fashion_mnist, image_folder"),
    ({"batch_size": 0}, "batch sizes must be >= 1"),
    ({"val_fraction": -0.1}, r"val_fraction must be in \[0, 1\)"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(UsageError, match=match):
        ImageDataModule(**kwargs)


def test_registry_lists_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "fashion_mnist", "image_folder"]


def test_under_ddp_each_rank_gets_its_own_shard_of_batches(fake_fashion_mnist):
    """Lightning wraps our batch sampler in DistributedSamplerWrapper; ranks must not share samples."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    dm = ImageDataModule(root=str(fake_fashion_mnist), batch_size=100)
    dm.setup("fit")
    seen = []
    for rank in (0, 1):  # each rank is a process of its own, seeded alike by seed_everything
        torch.manual_seed(0)
        loader = dm.train_dataloader()
        torch.rand(rank + 1)  # ranks need not have drawn the same random numbers since
        sampler = DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(0)
        seen.append(torch.cat([dm.train_set[batch][2] for batch in sampler]))
    assert len(seen[0]) == len(seen[1]) == 27000  # 540 batches of 100 split in two
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
