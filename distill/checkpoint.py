"""Safe checkpoint reading: tensors and plain values only (``weights_only=True``), clear errors."""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.errors import UsageError
from distill.models import create_model
from distill.models.tta import with_tta

MODEL_PREFIX = "model."  # where the systems keep the network in their state dict


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a checkpoint with ``torch.load(weights_only=True)``: a pickled object is refused, never run.

    Raises:
        UsageError: the file is missing, truncated, corrupt, or carries anything but tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling failed"
        raise UsageError(f"checkpoint {path} refused: it holds more than tensors and plain values ({reason[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise UsageError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise UsageError(f"checkpoint {path} is not a distill checkpoint (no state_dict/hyper_parameters)")
    return ckpt


@dataclass
class Trained:
    """A network rebuilt from a stage's checkpoint, with what it was trained on."""

    path: Path
    model: nn.Module  # the classifier the stage evaluated: ``network`` under the stage's test-time augmentation
    network: nn.Module  # the trained network itself, eval mode, weights loaded
    hparams: dict[str, Any]  # the stage's: architecture, num_classes, input_shape, optimizer, ...
    data_hparams: dict[str, Any]  # the DataModule's: dataset, root, split, ...
    tta: str = "none"  # the test-time augmentation ``model`` averages over
    fill: tuple[float, ...] | None = None  # the border value of its shifted views (None: edge pixels)

    def with_fill(self, fill: tuple[float, ...]) -> "Trained":
        """The same network and views, shifted views filled with ``fill``."""
        return dataclasses.replace(self, model=with_tta(self.network, self.tta, fill), fill=tuple(fill))


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the classifier a distill stage trained, with its weights, in eval mode.

    A stage trained with a test-time augmentation (``tta``) comes back wrapped in it: the function
    that stage validated, tested and chose its best checkpoint by.

    Returns:
        The model and the stage's hyperparameters (architecture, classes, input shape, ...).
    """
    trained = load_trained(path)
    return trained.model, trained.hparams


def load_trained(path: str | Path, tta: str | None = None, fill: tuple[float, ...] | None = None) -> Trained:
    """Like ``model_from_checkpoint``, also returning the data settings the checkpoint was trained with.

    Args:
        path: A stage's checkpoint.
        tta: Test-time augmentation to wrap the network in (``distill.models.tta.TTA_VIEWS``);
            None keeps the one the stage used.
        fill: Border value of shifted views (``distill.models.tta.shift``); None keeps the stage's
            (checkpoints saved before it was recorded repeat the edge pixels).
    """
    ckpt = load_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    try:
        model = create_model(hparams["model"], num_classes=hparams["num_classes"],
                             in_channels=hparams["input_shape"][0], **(hparams.get("model_kwargs") or {}))
    except KeyError as err:
        raise UsageError(f"checkpoint {path} lacks the hyperparameter {err}") from None
    weights = {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"checkpoint {path}: weights do not fit {hparams['model']} ({first})") from None
    model.eval()
    tta = tta or hparams.get("tta", "none")
    if fill is None:
        fill = hparams.get("tta_fill")
    fill = None if fill is None else tuple(fill)
    return Trained(Path(path), with_tta(model, tta, fill), model, hparams,
                   dict(ckpt.get("datamodule_hyper_parameters") or {}), tta, fill)
