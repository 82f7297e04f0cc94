"""Test-time augmentation (TTA): a classifier's logits averaged over fixed views of each image.

Used to make a stronger teacher at inference cost only: its averaged logits, cached once per
training image, are the student's soft targets. Every view set here is closed under mirroring,
so the averaged classifier gives an image and its mirror the same logits.
"""

from __future__ import annotations

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


def label(model: str, tta: str) -> str:
    """How reports name a classifier: the architecture, with its view set if it averages over one."""
    return model if tta == "none" else f"{model} + {tta} TTA"


def shift(images: Tensor, dx: int, dy: int) -> Tensor:
    """Moves the content of (B, C, H, W) images by (dx, dy) pixels, repeating the edge pixels.

    Edge replication commutes with per-channel normalization, so the result is the same whether
    the images are normalized before or after.
    """
    if dx == 0 and dy == 0:
        return images
    p = max(abs(dx), abs(dy))
    h, w = images.shape[-2:]
    padded = F.pad(images, (p, p, p, p), mode="replicate")  # (B, C, H+2p, W+2p)
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def average_logits(model: nn.Module, images: Tensor, tta: str) -> Tensor:
    """Mean of ``model``'s logits over the views ``tta`` names; plain ``model(images)`` for "none".

    Args:
        model: Classifier mapping (B, C, H, W) images to (B, K) logits.
        images: (B, C, H, W) batch.
        tta: A key of ``TTA_VIEWS``.

    Returns:
        (B, K) logits.
    """
    views = TTA_VIEWS[tta]
    if len(views) == 1:
        return model(images)
    total = None
    for dx, dy, mirrored in views:
        view = shift(images, dx, dy)
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

    invariant_to = frozenset({"hflip"})  # random transforms that leave this module's output unchanged

    def __init__(self, model: nn.Module, tta: str) -> None:
        super().__init__()
        self.model = model
        self.tta = check_tta(tta)

    def forward(self, images: Tensor) -> Tensor:
        return average_logits(self.model, images, self.tta)


def with_tta(model: nn.Module, tta: str) -> nn.Module:
    """``model`` itself for "none", else ``TestTimeAugmented(model, tta)``."""
    return model if check_tta(tta) == "none" else TestTimeAugmented(model, tta)
