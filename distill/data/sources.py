"""Where images come from: one registered loader per dataset, all returning uint8 tensors.

Small datasets (Fashion-MNIST, CIFAR) are loaded whole as ``(N, C, H, W)`` uint8 tensors so
that batches can be taken by index; an image folder is read lazily, file by file.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill.errors import UsageError
from distill.registry import Registry

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DOWNLOAD_ROOT = Path("data")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the augmentation need to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool  # a mirrored image keeps its class
    crop_padding: int  # pixels of zero padding for random-crop augmentation
    classes: tuple[str, ...]


@dataclass
class Split:
    """Images and labels of one split, held in memory."""

    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64


class InMemorySource:
    """A dataset small enough to hold in memory; ``load`` reads one split from disk."""

    def __init__(self, info: DatasetInfo, load: Callable[[bool], Split]) -> None:
        self.info = info
        self._load = load

    def load(self, train: bool) -> Split:
        """Reads the training (``train=True``) or test split."""
        return self._load(train)


SOURCES: Registry[Callable[..., object]] = Registry("dataset")


def _read_idx(path: Path, sha256: str | None = None) -> np.ndarray:
    """Reads an IDX file (optionally gzipped) as used by MNIST and Fashion-MNIST.

    Args:
        path: The file.
        sha256: Expected digest of the uncompressed bytes; a mismatch is an error.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise UsageError(f"{path} is truncated or corrupt ({type(err).__name__})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UsageError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) + 4 + 4 * ndim
    if len(data) != expected:
        raise UsageError(f"{path} is truncated or corrupt: {len(data)} bytes, header says {expected}")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise UsageError(f"{path} does not match the published file (sha256 of its content differs); "
                         "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or delete it to download again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


# sha256 of the uncompressed IDX files (the same in Debian's package, re-gzipped, and the originals).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

_FMNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _fashion_mnist_dir(root: str | None, download: bool) -> Path:
    """The directory holding all four IDX files; downloads with torchvision as a last resort.

    An explicit ``root`` is the only place looked at (an incomplete one is an error, never silently
    replaced by another copy); without it, Debian's package directory, then ``data/``.
    """
    stems = [s for pair in _FMNIST_FILES.values() for s in pair[:2]]
    if root:
        candidates = [Path(root), Path(root) / "FashionMNIST" / "raw"]
    else:
        candidates = [DEBIAN_FASHION_MNIST, DEFAULT_DOWNLOAD_ROOT / "FashionMNIST" / "raw"]
    for directory in candidates:
        present = [s for s in stems if _find_idx(directory, s)]
        if len(present) == len(stems):
            return directory
        if root and present:
            missing = ", ".join(s for s in stems if s not in present)
            raise UsageError(f"Fashion-MNIST in {directory} is incomplete: missing {missing}")
    where = " or ".join(str(c) for c in candidates)
    hint = "install it with `apt-get install dataset-fashion-mnist`, or pass --data.root DIR holding the four IDX files"
    if download:
        from torchvision.datasets import FashionMNIST

        target = Path(root) if root else DEFAULT_DOWNLOAD_ROOT
        try:
            FashionMNIST(str(target), train=True, download=True)
            FashionMNIST(str(target), train=False, download=True)
        except Exception as err:  # noqa: BLE001  (offline: URLError, socket errors, ...)
            raise UsageError(
                f"Fashion-MNIST not found in {where} and the download failed ({type(err).__name__}); {hint}"
            ) from None
        return target / "FashionMNIST" / "raw"
    raise UsageError(f"Fashion-MNIST not found in {where}; {hint}, or allow --data.download true")


@SOURCES.register
def fashion_mnist(root: str | None = None, download: bool = True) -> InMemorySource:
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28x28 grey images of 10 clothing classes.

    Looked for in ``root`` if given, else in Debian's ``dataset-fashion-mnist`` package, then in
    ``data/``; downloaded with torchvision if allowed and nothing is found. File contents are
    checked against the published checksums.
    """
    info = DatasetInfo(
        name="fashion_mnist", num_classes=10, in_channels=1, image_size=28,
        mean=(0.2860,), std=(0.3530,), hflip=True, crop_padding=2,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    )

    def load(train: bool) -> Split:
        directory = _fashion_mnist_dir(root, download)
        image_stem, label_stem, count = _FMNIST_FILES[train]
        images = _read_idx(_find_idx(directory, image_stem), FASHION_MNIST_SHA256.get(image_stem))  # type: ignore[arg-type]
        labels = _read_idx(_find_idx(directory, label_stem), FASHION_MNIST_SHA256.get(label_stem))  # type: ignore[arg-type]
        if images.shape != (count, 28, 28) or labels.shape != (count,):
            raise UsageError(f"Fashion-MNIST in {directory} has shape {images.shape}/{labels.shape}, "
                             f"expected ({count}, 28, 28)/({count},)")
        return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))

    return InMemorySource(info, load)


def _cifar(name: str, num_classes: int, root: str | None, download: bool) -> InMemorySource:
    from torchvision import datasets

    klass = datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100
    base = Path(root) if root else DEFAULT_DOWNLOAD_ROOT
    mean = (0.4914, 0.4822, 0.4465) if num_classes == 10 else (0.5071, 0.4865, 0.4409)
    std = (0.2470, 0.2435, 0.2616) if num_classes == 10 else (0.2673, 0.2564, 0.2762)
    info = DatasetInfo(name=name, num_classes=num_classes, in_channels=3, image_size=32, mean=mean, std=std,
                       hflip=True, crop_padding=4, classes=())

    def load(train: bool) -> Split:
        try:
            ds = klass(str(base), train=train, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted."
            raise UsageError(f"{name} not found in {base} ({err}); pass --data.root DIR holding "
                             f"{klass.base_folder}/ or allow --data.download true on a machine online") from None
        except Exception as err:  # noqa: BLE001  (download failures)
            raise UsageError(f"{name} not found in {base} and the download failed ({type(err).__name__}); "
                             f"pass --data.root DIR holding {klass.base_folder}/") from None
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return Split(images, torch.tensor(ds.targets, dtype=torch.int64))

    return InMemorySource(info, load)


@SOURCES.register
def cifar10(root: str | None = None, download: bool = True) -> InMemorySource:
    """CIFAR-10 (Krizhevsky 2009) through torchvision: 50k/10k 32x32 colour images, 10 classes."""
    return _cifar("cifar10", 10, root, download)


@SOURCES.register
def cifar100(root: str | None = None, download: bool = True) -> InMemorySource:
    """CIFAR-100 (Krizhevsky 2009) through torchvision: 50k/10k 32x32 colour images, 100 classes."""
    return _cifar("cifar100", 100, root, download)


class FolderSource:
    """An ImageFolder tree ``root/{train,test}/<class>/<image>``, read lazily and resized.

    Args:
        root: Directory holding ``train/`` and ``test/`` (or ``val/``) class folders.
        image_size: Side of the square images fed to the model.
    """

    def __init__(self, root: str, image_size: int, grayscale: bool = False, skip_unreadable: bool = False,
                 max_image_pixels: int | None = None) -> None:
        self.root = Path(root)
        self.skip_unreadable, self.max_image_pixels = skip_unreadable, max_image_pixels
        self.mode = "L" if grayscale else "RGB"
        train_dir = self.root / "train"
        test_dir = next((self.root / d for d in ("test", "val") if (self.root / d).is_dir()), None)
        if not train_dir.is_dir() or test_dir is None:
            raise UsageError(f"image folder {self.root} must hold train/ and test/ (or val/) class folders")
        self.train_dir, self.test_dir = train_dir, test_dir
        classes = tuple(sorted(e.name for e in os.scandir(train_dir) if e.is_dir()))
        if len(classes) < 2:
            raise UsageError(f"image folder {train_dir} needs at least 2 class folders, found {len(classes)}")
        test_classes = tuple(sorted(e.name for e in os.scandir(test_dir) if e.is_dir()))
        if test_classes != classes:
            raise UsageError(f"class folders differ between {train_dir} and {test_dir}")
        # mean and std are unknown (empty) until computed from the training split (ImageDataModule.setup)
        self.info = DatasetInfo(name="image_folder", num_classes=len(classes), in_channels=1 if grayscale else 3,
                                image_size=image_size, mean=(), std=(), hflip=True,
                                crop_padding=image_size // 8, classes=classes)

    def dataset(self, train: bool) -> torch.utils.data.Dataset:
        """A torchvision ImageFolder yielding ``(uint8 (C, S, S) image, label)`` pairs (C: 1 grey, 3 RGB)."""
        from torchvision import datasets, transforms

        to_uint8 = transforms.Compose([
            transforms.Resize((self.info.image_size, self.info.image_size)),
            transforms.PILToTensor(),
        ])
        folder = datasets.ImageFolder(str(self.train_dir if train else self.test_dir), transform=to_uint8,
                                      loader=functools.partial(open_image, mode=self.mode,
                                                               max_pixels=self.max_image_pixels))
        folder.samples = readable(folder.samples, self.max_image_pixels, self.skip_unreadable)
        folder.imgs, folder.targets = folder.samples, [label for _, label in folder.samples]
        return folder


def unreadable(path: str | Path, max_pixels: int | None = None) -> str | None:
    """Why an image file cannot be read (from its size and header, without decoding it), or None."""
    from PIL import Image, UnidentifiedImageError

    if os.path.getsize(path) == 0:
        return "an empty file"
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    try:
        with pixel_limit(None, unlimited=True), Image.open(path) as img:  # the header only: nothing is decoded
            width, height = img.size
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except OSError as err:
        return f"unreadable ({str(err).splitlines()[0][:80]})"
    if limit and width * height > limit:
        return (f"{width}x{height} = {width * height:,} pixels, above the {limit:,} allowed "
                "(--data.max_image_pixels raises it)")
    return None


def readable(samples: list[tuple[str, int]], max_pixels: int | None, skip: bool) -> list[tuple[str, int]]:
    """``samples`` whose images can be read; an unreadable one is a one-line error, or with ``skip`` left out and counted."""
    reasons = [(path, unreadable(path, max_pixels)) for path, _ in samples]
    bad = [(path, why) for path, why in reasons if why is not None]
    if bad and not skip:
        raise UsageError(f"{bad[0][0]} is {bad[0][1]} ({len(bad)} such of {len(samples)} images; "
                         "--data.skip_unreadable true leaves them out)")
    if bad:
        warnings.warn(f"left out {len(bad)} unreadable of {len(samples)} images, e.g. {bad[0][0]}: {bad[0][1]}",
                      stacklevel=2)
    kept = {path for path, why in reasons if why is None}
    return [(path, label) for path, label in samples if path in kept]


def open_image(path: str | Path, mode: str, max_pixels: int | None = None):  # type: ignore[no-untyped-def]
    """An image file as a PIL image in ``mode`` (``L`` or ``RGB``), 16-bit grey scaled to 8 bits.

    Pillow's own conversion clips a 16-bit value to 255, turning a 16-bit greyscale PNG white;
    dividing by 257 maps 0..65535 onto 0..255 as an 8-bit save of the same picture would.
    ``max_pixels`` replaces Pillow's decompression-bomb limit while this file is read.
    """
    from PIL import Image

    try:
        with pixel_limit(max_pixels), Image.open(path) as img:
            if img.mode.startswith("I;16") or (img.mode == "I" and np.asarray(img).max() > 255):
                grey = np.asarray(img, dtype=np.float64) / 257.0  # (H, W)
                return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8), mode="L").convert(mode)
            return img.convert(mode)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:  # Pillow's own errors for damaged files
        raise UsageError(f"{path} is not an image this data can read ({str(err).splitlines()[0][:100]})") from None


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None, unlimited: bool = False) -> Iterator[None]:
    """Pillow's image-size limit set to ``max_pixels`` (or lifted) inside the block, restored after."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    if unlimited or max_pixels:
        Image.MAX_IMAGE_PIXELS = None if unlimited else max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous



@SOURCES.register
def image_folder(root: str | None = None, download: bool = True, image_size: int = 32, grayscale: bool = False,
                 skip_unreadable: bool = False, max_image_pixels: int | None = None) -> FolderSource:
    """Any ImageFolder tree with ``train/`` and ``test/`` class folders (never downloaded)."""
    if not root:
        raise UsageError("dataset image_folder needs --data.root DIR holding train/ and test/ class folders")
    return FolderSource(root, image_size, grayscale, skip_unreadable, max_image_pixels)
