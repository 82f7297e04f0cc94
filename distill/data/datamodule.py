"""The DataModule: owns loading, the train/validation split, batching and batch transforms."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler, Subset

from distill.data import augment
from distill.data.sources import SOURCES, DatasetInfo, FolderSource, InMemorySource, open_image
from distill.errors import UsageError


class IndexedTensors(Dataset):
    """Serves whole batches from in-memory tensors: ``dataset[list_of_indices]``.

    Used with a ``BatchSampler`` as the DataLoader's sampler and ``batch_size=None``, so one
    fancy-indexing op replaces per-sample ``__getitem__`` calls plus collation.
    """

    def __init__(self, images: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.images, self.labels, self.indices = images, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        idx = self.indices[positions]  # (B,) indices into the full training (or test) split
        return self.images[idx], self.labels[idx], idx


class IndexedFolder(Dataset):
    """Wraps a per-sample dataset so that items carry their index: ``(image, label, index)``."""

    def __init__(self, dataset: Dataset, indices: list[int] | None = None) -> None:
        self.dataset = dataset if indices is None else Subset(dataset, indices)
        self.indices = indices

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        image, label = self.dataset[i]
        return image, label, (i if self.indices is None else self.indices[i])


def pixel_statistics(dataset: Dataset, max_images: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels in [0, 1] over up to ``max_images`` evenly spaced images of ``dataset``."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise UsageError("the training split has no images")
    positions = torch.linspace(0, n - 1, min(n, max_images)).round().long().unique().tolist()
    total = total_sq = None
    count = 0
    for position in positions:
        image = dataset[position][0].double() / 255.0  # (C, H, W)
        pixels = image.flatten(1)  # (C, H*W)
        total = pixels.sum(1) if total is None else total + pixels.sum(1)
        total_sq = (pixels**2).sum(1) if total_sq is None else total_sq + (pixels**2).sum(1)
        count += pixels.shape[1]
    mean = total / count  # type: ignore[operator]
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()  # type: ignore[operator]
    return tuple(round(float(m), 6) for m in mean), tuple(round(max(float(s), 1e-3), 6) for s in std)


class EpochShuffle(Sampler[int]):
    """A random order of ``range(n)`` per epoch, a function of the seed and the epoch only.

    Epoch ``e`` gets the ``e``-th permutation drawn from a generator seeded with ``seed``: the order
    a ``RandomSampler`` sharing one seeded generator across epochs gave in Lightning's loop, which
    stops each epoch at its last full batch (every figure this project published was measured with
    that order). Unlike that generator, the order does not depend on the epochs this process has
    run: a run resumed at epoch ``e`` sees the same batches as one that never stopped.

    Args:
        n: Number of samples.
        seed: The run's seed.
        epoch: Returns the epoch about to be iterated (the trainer's ``current_epoch``).
    """

    def __init__(self, n: int, seed: int, epoch: Callable[[], int]) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch
        self._generator: torch.Generator | None = None
        self._passes = 0  # permutations drawn from the generator so far

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch()
        if self._generator is None or epoch < self._passes:
            self._generator, self._passes = torch.Generator().manual_seed(self.seed), 0
        while self._passes <= epoch:  # catch up after a resume; one draw for a run that never stopped
            order = torch.randperm(self.n, generator=self._generator)
            self._passes += 1
        return iter(order.tolist())


class ImageDataModule(LightningDataModule):
    """Image classification data: a seeded validation split, batched augmentation, normalization.

    Implements ``distill.data.interface.DistillData``, the interface every stage uses.

    Batches are ``(images, labels, indices)``: uint8 images on the loader side, turned into
    normalized (and, in training, augmented) float tensors after the transfer to the device.
    ``indices`` point into the full training split (used to look up cached teacher outputs).

    Args:
        dataset: Registered dataset name: fashion_mnist, cifar10, cifar100 or image_folder.
        root: Directory holding the dataset files (default: the system copy or ``data/``).
        download: Allow downloading with torchvision when the files are not found.
        batch_size: Training batch size (per device).
        eval_batch_size: Batch size for validation and test.
        val_fraction: Part of the training split held out for validation, in [0, 1). 0 trains on the
            whole training split and validates on the test set, as the published CIFAR benchmark runs
            do: ``best.ckpt`` is then chosen on the test set and only the ``last_epoch/`` test
            figures are unbiased (the stage says so when it starts).
        split_seed: Seed of the train/validation split, kept apart from the training seed so that
            a teacher and its students see the same split.
        augment: Random crop with padding (and horizontal flip where it fits the data) in training.
            Off by default: on Fashion-MNIST's short CPU schedules it costs accuracy (README, recipe notes).
        crop_padding: Zero padding of the random crop in pixels; None takes the dataset's (2 for
            Fashion-MNIST, 4 for CIFAR), 0 leaves flips as the only augmentation.
        image_size: Side of the images for image_folder (others keep their native size).
        grayscale: image_folder: read the images as one grey channel instead of RGB.
        skip_unreadable: image_folder: leave out empty, corrupt or oversized image files (counted in a
            warning) instead of refusing the folder in one line naming the first.
        max_image_pixels: image_folder: the largest image accepted, in pixels (Pillow's guard against
            decompression bombs; None: Pillow's default, about 89 million).
        mean: Per-channel mean of the pixels in [0, 1] used to normalize; None: the dataset's
            published value, or for image_folder computed from its training part (then saved
            with every checkpoint, so evaluation and prediction normalize the same way).
        std: Per-channel standard deviation, as ``mean``.
        num_workers: Loader processes for image_folder (in-memory datasets need none).
        data_on_device: When training on an accelerator, keep in-memory datasets (Fashion-MNIST,
            CIFAR) on it as uint8 tensors, so a batch is one index operation with no host-to-device copy.
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str | None = None,
        download: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: bool = False,
        crop_padding: int | None = None,
        image_size: int = 32,
        grayscale: bool = False,
        skip_unreadable: bool = False,
        max_image_pixels: int | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        num_workers: int = 4,
        data_on_device: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise UsageError(f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if image_size < 8:
            raise UsageError(f"image_size must be >= 8, got {image_size}")
        if crop_padding is not None and crop_padding < 0:
            raise UsageError(f"crop_padding must be >= 0, got {crop_padding}")
        self.save_hyperparameters()
        factory = SOURCES.get(dataset)
        kwargs = {"image_size": image_size, "grayscale": grayscale, "skip_unreadable": skip_unreadable,
                  "max_image_pixels": max_image_pixels} if dataset == "image_folder" else {}
        self.source: InMemorySource | FolderSource = factory(root=root, download=download, **kwargs)  # type: ignore[assignment]
        if (mean is None) != (std is None):
            raise UsageError("give --data.mean and --data.std together")
        if mean is not None and std is not None:
            channels = self.source.info.in_channels
            if len(mean) != channels or len(std) != channels or min(std) <= 0:
                raise UsageError(f"--data.mean and --data.std need {channels} values each (std > 0), got {mean} and {std}")
            self.source.info = dataclasses.replace(self.source.info, mean=tuple(mean), std=tuple(std))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.augment = augment
        self.crop_padding = crop_padding
        self.num_workers = num_workers
        self.data_on_device = data_on_device
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.folder_train: Any = None  # image_folder: the full training ImageFolder (train + validation)

    # What the model side needs to know, linked into the LightningModule by the CLI.
    @property
    def info(self) -> DatasetInfo:
        return self.source.info

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model receives."""
        return (self.info.in_channels, self.info.image_size, self.info.image_size)

    def split_indices(self, n: int) -> tuple[Tensor, Tensor]:
        """Seeded permutation of ``range(n)`` cut into (train, validation) indices."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        n_val = max(1, round(n * self.val_fraction)) if self.val_fraction > 0 else 0
        return perm[n_val:].sort().values, perm[:n_val].sort().values

    def prepare_data(self) -> None:
        # Only to surface "not found" / download problems on one process before setup.
        if isinstance(self.source, InMemorySource) and self.train_set is None:
            self.source.load(train=False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.val_fraction == 0 and stage in ("fit", None):
            rank_zero_warn("val_fraction 0: training on the whole training split and validating on the TEST set; "
                           "best.ckpt is chosen on the test set, so report the last_epoch/ test figures")
        if isinstance(self.source, InMemorySource):
            train = self.source.load(train=True)
            test = self.source.load(train=False)
            train_idx, val_idx = self.split_indices(len(train.labels))
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            if self.data_on_device and device.type != "cpu":
                train.images, train.labels, test.images, test.labels = (
                    t.to(device) for t in (train.images, train.labels, test.images, test.labels))
            self.train_set = IndexedTensors(train.images, train.labels, train_idx)
            self.val_set = IndexedTensors(train.images, train.labels, val_idx)
            self.test_set = IndexedTensors(test.images, test.labels, torch.arange(len(test.labels)))
        else:
            self.folder_train = self.source.dataset(train=True)
            train_idx, val_idx = self.split_indices(len(self.folder_train))  # type: ignore[arg-type]
            self.train_set = IndexedFolder(self.folder_train, train_idx.tolist())
            self.val_set = IndexedFolder(self.folder_train, val_idx.tolist())
            self.test_set = IndexedFolder(self.source.dataset(train=False))
            if not self.info.mean:
                self._set_normalization(*pixel_statistics(self.train_set))

    def _set_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Uses and records (in the hyperparameters checkpoints keep) the normalization computed from the data."""
        self.source.info = dataclasses.replace(self.info, mean=mean, std=std)
        self.hparams["mean"], self.hparams["std"] = list(mean), list(std)
        rank_zero_info(f"{self.info.name}: normalization from the training images: mean "
                       f"{', '.join(f'{m:.4f}' for m in mean)}, std {', '.join(f'{v:.4f}' for v in std)}")

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of pixels in [0, 1] that inputs are normalized with (after setup)."""
        if not self.info.mean:
            self.setup("fit")
        return self.info.mean, self.info.std

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        assert dataset is not None, "setup() must run first"
        # The order is a function of the run's seed and the epoch, never of the global RNG: under DDP
        # every rank enumerates the same batches (the distributed wrapper hands each a disjoint share),
        # and a resumed run sees the batches an uninterrupted one would.
        seed = torch.initial_seed()
        sampler = EpochShuffle(len(dataset), seed, self._epoch) if shuffle else SequentialSampler(dataset)  # type: ignore[arg-type]
        if isinstance(dataset, IndexedTensors):
            # drop_last in training keeps every step the same size (BatchNorm statistics, speed);
            # evaluation sees every sample exactly once.
            batches = BatchSampler(sampler, batch_size, drop_last=shuffle and len(dataset) >= batch_size)
            return DataLoader(dataset, sampler=batches, batch_size=None)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,  # image_folder
                          drop_last=shuffle and len(dataset) >= batch_size,  # type: ignore[arg-type]
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # val_fraction 0: no held-out part; validation runs on the test set (announced in setup).
        return self._loader(self.val_set if self.val_fraction > 0 else self.test_set, self.eval_batch_size,
                            shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def training_inputs(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The whole training array in order, normalized and unaugmented: ``(images (B, C, H, W), indices (B,))``.

        Indices are those the training batches carry, so per-sample values computed from this
        (cached teacher outputs) can be looked up by a batch's ``indices``.
        """
        self.setup("fit")
        if isinstance(self.train_set, IndexedTensors):
            images = self.train_set.images
            for start in range(0, len(images), self.eval_batch_size):
                idx = torch.arange(start, min(start + self.eval_batch_size, len(images)))
                yield self.transform(images[idx.to(images.device)], train=False), idx
        else:
            assert self.folder_train is not None
            loader = DataLoader(IndexedFolder(self.folder_train), batch_size=self.eval_batch_size,
                                num_workers=self.num_workers)
            for images, _, idx in loader:
                yield self.transform(images, train=False), idx

    def read_files(self, paths: list[Path]) -> Tensor:
        """Image files as model-ready inputs (B, C, H, W): grey or RGB as the data, resized, normalized.

        The preprocessing the network was trained with, for ``python -m distill.predict``.
        """
        from PIL import Image, UnidentifiedImageError

        side, mode = self.info.image_size, "L" if self.info.in_channels == 1 else "RGB"
        arrays = []
        for path in paths:
            try:
                pixels = open_image(path, mode, self.hparams.max_image_pixels).resize((side, side),
                                                                                      Image.Resampling.BILINEAR)
            except (OSError, UnidentifiedImageError):
                raise UsageError(f"{path} is not an image this data can read") from None
            array = np.asarray(pixels, dtype=np.uint8).reshape(side, side, -1)  # (H, W, C)
            arrays.append(torch.from_numpy(array.copy()).permute(2, 0, 1))  # (C, H, W)
        return self.transform(torch.stack(arrays), train=False)

    def num_training_samples(self) -> int:
        """Size of the full training array (training and validation parts) that indices point into."""
        self.setup("fit")
        if isinstance(self.train_set, IndexedTensors):
            return len(self.train_set.images)
        return len(self.folder_train)  # type: ignore[arg-type]

    def test_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The test split, normalized, each image once: ``(images (B, C, H, W), labels (B,))``."""
        self.setup("test")
        for images, labels, _ in self.test_dataloader():
            yield self.transform(images, train=False), labels

    def fingerprint(self) -> str:
        """Identifies the training inputs a model sees (data, size, normalization) for caches keyed on them."""
        self.setup("fit")
        digest = hashlib.sha256()
        info = self.info
        digest.update(repr((info.name, info.image_size, info.mean, info.std)).encode())
        if isinstance(self.train_set, IndexedTensors):
            digest.update(self.train_set.images.cpu().numpy().tobytes())
        else:
            for path, label in self.folder_train.samples:  # type: ignore[union-attr]
                stat = os.stat(path)
                digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    @property
    def crop_pixels(self) -> int:
        """Padding of the training crop in pixels: ``crop_padding``, or the dataset's when that is None."""
        return self.info.crop_padding if self.crop_padding is None else self.crop_padding

    @property
    def mirror_keeps_class(self) -> bool:
        """Whether a mirrored image keeps its class (the dataset's ``hflip``)."""
        return self.info.hflip

    @property
    def border_fill(self) -> tuple[float, ...]:
        """Per-channel value, after normalization, of the border the training crop adds: a black pixel.

        Test-time shifted views fill their border with it too (``distill.models.tta.shift``).
        """
        black = torch.zeros(1, self.info.in_channels, 1, 1, dtype=torch.uint8)
        return tuple(augment.normalize(black, *self.normalization).flatten().tolist())

    def random_transforms(self) -> frozenset[str]:
        """Names of the random transforms training batches go through: ``crop``, ``hflip``, or none."""
        if not self.augment:
            return frozenset()
        return frozenset(name for name, used in (("crop", self.crop_pixels > 0), ("hflip", self.info.hflip)) if used)

    def transform(self, images: Tensor, train: bool) -> Tensor:
        """uint8 (B, C, H, W) -> normalized float (B, C, H, W), augmented when ``train`` and enabled.

        Runs after the transfer to the device (``on_after_batch_transfer``), where batched ops are cheapest.
        """
        if train and self.augment:
            images = augment.random_crop(images, self.crop_pixels)
            if self.info.hflip:
                images = augment.random_hflip(images)
        return augment.normalize(images, *self.normalization)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor, Tensor]:
        images, labels, indices = batch
        training = self.trainer is not None and self.trainer.training
        return self.transform(images, train=training), labels, indices
