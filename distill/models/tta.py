"""Test-time augmentation (TTA): a classifier's logits averaged over fixed views of each image.

Used to make a stronger teacher at inference cost only: its averaged logits, cached once per
training image, are the student's soft targets. Every view set here is closed under mirroring,
so the averaged classifier gives an image and its mirror the same logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import UsageError

# name -> views (dx, dy, mirrored): shift the image by (dx, dy) pixels, then mirror it if asked.
TTA_VIEWS: dict[str, tuple[tuple[int, int, bool], ...]] = {
    "none": ((0, 0, False),),
    "flip": ((0, 0, False), (0, 0, True)),
    "flip_shift": tuple((dx, dy, mirrored) for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
                        for mirrored in (False, True)),
}


def check_tta(name: str) -> str:
    """``name`` if it is a known view set; a UsageError listing the valid ones otherwise."""
    if name not in TTA_VIEWS:
        raise UsageError(f"unknown test-time augmentation {name!r}; valid: {', '.join(TTA_VIEWS)}")
    return name


def mirrors(tta: str) -> bool:
    """Whether the view set ``tta`` includes mirrored images."""
    return any(mirrored for *_, mirrored in TTA_VIEWS[tta])


def invariances(tta: str) -> frozenset[str]:
    """Random transforms of the input that leave the average over ``tta``'s views unchanged.

    Every view set is closed under mirroring, so one with mirrored views gives an image and its
    mirror the same output: a cache of its targets stays valid under random flips.
    """
    return frozenset({"hflip"}) if mirrors(tta) else frozenset()


def label(model: str, tta: str) -> str:
    """How reports name a classifier: the architecture, with its view set if it averages over one."""
    return model if tta == "none" else f"{model} + {tta} TTA"


def shift(images: Tensor, dx: int, dy: int, fill: Sequence[float] | None = None) -> Tensor:
    """Moves the content of (B, C, H, W) images by (dx, dy) pixels.

    Args:
        images: (B, C, H, W) batch.
        dx, dy: Pixels to move right and down (negative: left and up).
        fill: Per-channel value (C,) of the uncovered border, in the images' units: the value the
            training crop pads with (a black pixel, normalized; ``DistillData.border_fill``), so a
            shifted view looks like a training crop. None repeats the edge pixels (how checkpoints
            saved without a fill were evaluated).
    """
    if dx == 0 and dy == 0:
        return images
    p = max(abs(dx), abs(dy))
    h, w = images.shape[-2:]
    if fill is None:
        padded = F.pad(images, (p, p, p, p), mode="replicate")  # (B, C, H+2p, W+2p)
    else:
        inside = torch.zeros(h + 2 * p, w + 2 * p, dtype=torch.bool, device=images.device)
        inside[p : p + h, p : p + w] = True
        border = torch.tensor(fill, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        padded = torch.where(inside, F.pad(images, (p, p, p, p)), border)  # (B, C, H+2p, W+2p)
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def average_logits(model: nn.Module, images: Tensor, tta: str, fill: Sequence[float] | None = None) -> Tensor:
    """Mean of ``model``'s logits over the views ``tta`` names; plain ``model(images)`` for "none".

    Args:
        model: Classifier mapping (B, C, H, W) images to (B, K) logits.
        images: (B, C, H, W) batch.
        tta: A key of ``TTA_VIEWS``.
        fill: The border value of shifted views (see ``shift``).

    Returns:
        (B, K) logits.
    """
    views = TTA_VIEWS[tta]
    if len(views) == 1:
        return model(images)
    total = None
    for dx, dy, mirrored in views:
        view = shift(images, dx, dy, fill)
        logits = model(view.flip(3) if mirrored else view)  # (B, K)
        total = logits if total is None else total + logits
    return total / len(views)


class TestTimeAugmented(nn.Module):
    """``model`` with its logits averaged over the views of ``tta`` (a key of ``TTA_VIEWS``).

    Costs one forward pass per view. Because every view set is closed under mirroring, an image
    and its mirror get the same output: targets computed from this module stay valid when a
    student's inputs are randomly flipped, which lets a distillation stage cache them
    (see ``invariant_to``).
    """

    def __init__(self, model: nn.Module, tta: str, fill: Sequence[float] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tta = check_tta(tta)
        self.fill = None if fill is None else tuple(fill)  # a plain value, not a buffer: not part of the weights

    @property
    def invariant_to(self) -> frozenset[str]:
        """Random transforms that leave this module's output unchanged (``invariances``)."""
        return invariances(self.tta)

    def forward(self, images: Tensor) -> Tensor:
        return average_logits(self.model, images, self.tta, self.fill)


def with_tta(model: nn.Module, tta: str, fill: Sequence[float] | None = None) -> nn.Module:
    """``model`` itself for "none", else ``TestTimeAugmented(model, tta, fill)``."""
    return model if check_tta(tta) == "none" else TestTimeAugmented(model, tta, fill)


def describe(tta: str, fill: Sequence[float] | None) -> str:
    """The exact function a view set computes, for cache keys: its name and its border fill."""
    if tta == "none" or all(dx == 0 and dy == 0 for dx, dy, _ in TTA_VIEWS[tta]):
        return tta
    return f"{tta},fill={'edge' if fill is None else ','.join(repr(float(v)) for v in fill)}"
