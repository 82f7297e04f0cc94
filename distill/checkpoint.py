"""Safe checkpoint reading: tensors and plain values only (``weights_only=True``), clear errors.

A network comes back from the architecture name in the checkpoint's hyperparameters with every
layer resized to the shapes its saved weights have, so a network whose widths differ from the
registry's defaults (a pruned one) loads as well; nothing is ever unpickled.
"""

from __future__ import annotations

import inspect
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.data import DATA_MODULES
from distill.errors import UsageError
from distill.models import create_model
from distill.models.quantized import quantization_aware
from distill.tasks import get_task

MODEL_PREFIX = "model."  # where the systems keep the network in their state dict


def unpickling_reason(error: Exception) -> str:
    """What torch's weights-only unpickler met (``Unsupported global: GLOBAL pathlib.PosixPath``), without its
    advice to load the file unsafely."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    found = next((line for line in lines if "Unsupported global" in line or "WeightsUnpickler error" in line), None)
    return (found or next((line for line in lines if line), "unpickling failed")).replace(
        "WeightsUnpickler error: ", "")[:160]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a checkpoint with ``torch.load(weights_only=True)``: a pickled object is refused, never run.

    Raises:
        UsageError: the file is missing, truncated, corrupt, or carries anything but tensors and plain values.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"checkpoint {path} is a folder; give the file (a run directory's best.ckpt)")
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive ("PK\x03\x04"); its legacy format starts as a pickle (0x80).
    if magic[:4] != b"PK\x03\x04" and magic[:1] != b"\x80":
        beside = [p.name for p in (path.parent / "best.ckpt", path.parent / "model.onnx") if p.is_file() and p != path]
        hint = f"; beside it: {' and '.join(beside)}" if beside else ""
        raise UsageError(f"{path} is not a checkpoint (not a file written by torch.save){hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UsageError(f"checkpoint {path} refused: it holds more than tensors and plain values "
                         f"({unpickling_reason(err)}); code is never run from a file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise UsageError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise UsageError(f"checkpoint {path} is not a distill checkpoint (no state_dict/hyper_parameters)")
    return ckpt


@dataclass
class Trained:
    """A network rebuilt from a stage's checkpoint, with what it was trained on."""

    path: Path
    network: nn.Module  # the trained network, eval mode, weights loaded
    hparams: dict[str, Any]  # the stage's: architecture, num_classes, input_shape, optimizer, method, ...
    data_hparams: dict[str, Any]  # the DataModule's arguments: dataset, root, split, ...
    data_module: str | None = None  # the DataModule's registry name (``distill.data.DATA_MODULES``)


RESIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
SHAPED = ("weight", "bias", "running_mean", "running_var")  # the tensors whose sizes follow a layer's widths


def _resize(module: nn.Module, weights: dict[str, Tensor], prefix: str) -> None:
    """Gives one layer the widths of its saved tensors (a pruned conv, norm or linear layer)."""
    own = {name: t for name, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
           if name in SHAPED and f"{prefix}{name}" in weights}
    saved = {name: weights[f"{prefix}{name}"].shape for name in own}
    if all(saved[name] == own[name].shape for name in own):
        return
    layer = prefix.rstrip(".") or "the network"
    expected_ndim = own["weight"].ndim if "weight" in own else 1
    if not isinstance(module, RESIZABLE) or ("weight" in saved and len(saved["weight"]) != expected_ndim):
        raise UsageError(f"layer {layer} ({type(module).__name__}) has saved shapes {dict(saved)} that its "
                         "architecture cannot take")
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if module.groups != 1:
            raise UsageError(f"layer {layer}: a grouped convolution with other widths cannot be rebuilt")
        module.out_channels, module.in_channels = saved["weight"][0], saved["weight"][1]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = saved["weight"]
    else:
        module.num_features = (saved.get("running_mean") or saved["weight"])[0]
    for name, shape in saved.items():
        old = own[name]
        fresh = torch.empty(shape, dtype=old.dtype)
        if isinstance(old, nn.Parameter):
            setattr(module, name, nn.Parameter(fresh, requires_grad=old.requires_grad))
        else:
            module.register_buffer(name, fresh)


def fit_to_weights(model: nn.Module, weights: dict[str, Tensor]) -> nn.Module:
    """Resizes ``model``'s conv, norm and linear layers, in place, to the shapes of ``weights``.

    Raises:
        UsageError: another kind of layer has a saved shape that differs from the architecture's.
    """
    for name, module in model.named_modules():
        _resize(module, weights, f"{name}." if name else "")
    return model


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the network a distill stage trained, with its weights, in eval mode.

    Returns:
        The network and the stage's hyperparameters (architecture, classes, input shape, ...).
    """
    trained = load_trained(path)
    return trained.network, trained.hparams


def load_trained(path: str | Path) -> Trained:
    """Like ``model_from_checkpoint``, also returning the data settings the checkpoint was trained with."""
    ckpt = load_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    if str(hparams.get("model", "")).startswith("object:"):
        raise UsageError(f"checkpoint {path} holds a network that was passed to Python as an object "
                         f"({hparams['model'][len('object:'):]}); build it yourself and load the weights "
                         "with distill.load_network(network, path)")
    try:
        network = create_model(hparams["model"], num_classes=hparams["num_classes"],
                               in_channels=hparams["input_shape"][0], **(hparams.get("model_kwargs") or {}))
        if hparams.get("quantization"):  # trained int8-aware: its fake quantization rebuilt around the float network
            network = quantization_aware(network, hparams["input_shape"], hparams["quantization"])
        model = get_task(hparams.get("task")).wrap(network, hparams.get("target_scale"))
    except KeyError as err:
        raise UsageError(f"checkpoint {path} lacks the hyperparameter {err}") from None
    weights = {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    try:
        fit_to_weights(model, weights).load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"checkpoint {path}: weights do not fit {hparams['model']} ({first})") from None
    model.eval()
    return Trained(Path(path), model, hparams, dict(ckpt.get("datamodule_hyper_parameters") or {}),
                   ckpt.get("data_module"))


def rebuild_data(trained: Trained, data_root: str | None = None, eval_batch_size: int | None = None,
                 rows: bool = True) -> Any:
    """The DataModule a checkpoint was trained on, rebuilt from its saved registry name and arguments.

    The class comes from ``distill.data.DATA_MODULES`` by the name the checkpoint recorded
    (checkpoints from before it was recorded: ``images``), never imported from a path read in a file.

    Args:
        trained: The loaded checkpoint.
        data_root: Where the data lies now, if not where training found it.
        eval_batch_size: Batch size of the test and in-order training passes, if not the saved one.
        rows: False when only new inputs will be prepared (prediction): a DataModule that can (a
            table's ``schema_only``) then reads none of its training data.
    """
    data_class = DATA_MODULES.get(trained.data_module or "images")
    accepted = inspect.signature(data_class.__init__).parameters
    kwargs = {k: v for k, v in trained.data_hparams.items() if k in accepted}
    if data_root is not None and "root" in accepted:
        kwargs["root"] = data_root
    elif data_root is not None and kwargs.get("path"):  # a table: the same file name, in its new folder
        kwargs["path"] = str(Path(data_root) / Path(kwargs["path"]).name) if Path(data_root).is_dir() else data_root
    if eval_batch_size is not None and "eval_batch_size" in accepted:
        kwargs["eval_batch_size"] = eval_batch_size
    if not rows and "schema_only" in accepted:
        kwargs["schema_only"] = True
    return data_class(**kwargs)


def load_network(network: nn.Module, path: str | Path) -> nn.Module:
    """Loads the trained weights of a checkpoint into ``network`` (strictly, ``weights_only=True``).

    For networks built in Python and passed to a system as objects, which a checkpoint cannot rebuild
    by name. Layers are resized to the saved widths first (a pruned network).

    Raises:
        UsageError: the file is not a distill checkpoint, or its weights do not fit ``network``.
    """
    ckpt = load_checkpoint(path)
    weights = {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    try:
        fit_to_weights(network, weights).load_state_dict(weights)
    except RuntimeError as err:
        raise UsageError(f"checkpoint {path}: weights do not fit {type(network).__name__} "
                         f"({str(err).splitlines()[0]})") from None
    return network.eval()
