"""A teacher from anywhere: a distill checkpoint, a registry or torchvision/timm architecture, the user's own factory.

``--model.teacher SPEC`` names where the network comes from; ``--model.teacher_weights FILE``
fills it (``.safetensors``, or a ``.pt``/``.pth`` state dict read with ``weights_only=True``).
Code is only imported from the name the user typed (``import:package.module:factory``), never
from a weights file; programs that unpickle (TorchScript, ``.pt2``) load only when the user says
``--model.teacher_trust_code true``. Nothing is ever downloaded: torchvision and timm
architectures are built without pretrained weights.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.checkpoint import load_trained
from distill.errors import UsageError
from distill.models import create_model, object_name
from distill.models.teacher_view import TeacherView, first_conv_channels
from distill.teacher.onnx_teacher import OnnxTeacher

KINDS = ("registry", "torchvision", "timm", "import")
PROGRAM_SUFFIXES = (".pt2", ".ts", ".torchscript")  # files that carry code: loaded only when trusted
STRIPPED_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile and Lightning wrappers


@dataclass
class LoadedTeacher:
    """A teacher network and what describes it in reports and cache keys (plain values)."""

    network: nn.Module
    spec: str  # what the user typed (or the class of an object passed in Python)
    kind: str  # checkpoint, onnx, registry, torchvision, timm, import, program or object
    hparams: dict[str, Any] = field(default_factory=dict)  # a distill checkpoint's own (its tta, classes, shape)
    file: Path | None = None  # the checkpoint or weights file: teacher caches are kept beside it
    data_hparams: dict[str, Any] = field(default_factory=dict)  # a distill checkpoint's data settings (its fit)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_digest(network: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a network's parameters and buffers."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_teacher(spec: str | nn.Module, num_classes: int, in_channels: int, kwargs: dict[str, Any] | None = None,
                 weights: str | None = None, trust_code: bool = False, onnx: dict[str, Any] | None = None
                 ) -> LoadedTeacher:
    """Builds the teacher ``spec`` names, with ``weights`` loaded strictly.

    Args:
        spec: A distill checkpoint path; ``registry:NAME``; ``torchvision:NAME``; ``timm:NAME``;
            ``import:package.module:factory``; a TorchScript/``.pt2`` file (with ``trust_code``);
            or, from Python, an ``nn.Module``.
        num_classes: The data's classes: the default ``num_classes`` of built architectures.
        in_channels: The data's channels: the default ``in_channels`` of registry architectures.
        kwargs: Arguments of the factory, e.g. ``{"num_classes": 1000}`` (override the defaults).
        weights: ``.safetensors`` or ``.pt``/``.pth`` state dict for the built network.
        trust_code: Allow loading programs that unpickle (TorchScript, ``torch.export`` ``.pt2``).
        onnx: For an ``.onnx`` spec, ``OnnxTeacher``'s ``input_name``, ``output`` and ``scores``.

    Raises:
        UsageError: an unknown kind, a module or factory that does not exist, weights that do not
            fit, a file that would need unpickling, a missing optional package.
    """
    kwargs = dict(kwargs or {})
    if isinstance(spec, nn.Module):
        if weights:
            load_weights(spec, weights)
        return LoadedTeacher(spec, object_name(spec), "object", file=Path(weights) if weights else None)
    kind, _, name = spec.partition(":")
    if name and kind not in KINDS and len(kind) > 1 and not Path(spec).exists():  # not a path (nor C:\...)
        raise UsageError(f"unknown teacher kind {kind!r} in {spec!r}; valid: a checkpoint path, "
                         f"{', '.join(k + ':NAME' for k in KINDS[:3])}, import:package.module:factory")
    if kind not in KINDS or not name:
        if spec.endswith(".onnx"):  # any framework's model; no code runs, so no trust flag
            if kwargs or weights:
                raise UsageError(f"teacher {spec} is an ONNX file: it carries its weights and takes no "
                                 "--model.teacher_kwargs or --model.teacher_weights")
            if not Path(spec).is_file():
                raise UsageError(f"teacher {spec} not found")
            hparams, data = onnx_sidecar(Path(spec))
            return LoadedTeacher(OnnxTeacher(spec, **(onnx or {})), spec, "onnx", hparams, Path(spec), data)
        if spec.endswith(PROGRAM_SUFFIXES) or (trust_code and spec.endswith((".pt", ".pth"))):
            return LoadedTeacher(load_program(spec, trust_code), spec, "program", file=Path(spec))
        if kwargs or weights:
            raise UsageError(f"teacher {spec} is a distill checkpoint: --model.teacher_kwargs and "
                             "--model.teacher_weights apply to built teachers (registry:, torchvision:, timm:, import:)")
        trained = load_trained(spec)  # a distill checkpoint (or a one-line error saying what it is not)
        return LoadedTeacher(trained.network, spec, "checkpoint", dict(trained.hparams), Path(spec),
                             dict(trained.data_hparams))
    if kind == "registry":
        network = create_model(name, **{"num_classes": num_classes, "in_channels": in_channels, **kwargs})
    elif kind == "torchvision":
        network = build_torchvision(name, {"num_classes": num_classes, **kwargs})
    elif kind == "timm":
        network = build_timm(name, {"num_classes": num_classes, **kwargs})
    else:
        network = build_imported(name, kwargs)
    if weights:
        load_weights(network, weights)
    return LoadedTeacher(network, spec, kind, file=Path(weights) if weights else None)


def adapt_teacher(loaded: LoadedTeacher, input_shape: tuple[int, ...], num_classes: int, input_size: int | None = None,
                  normalize: str | None = None, output: str | None = None) -> nn.Module:
    """The frozen teacher as the data's inputs reach it: behind a ``TeacherView`` when it needs one, checked.

    Args:
        loaded: The teacher.
        input_shape: One model-ready input of the data, (C, H, W).
        num_classes: The data's classes.
        input_size, normalize, output: The adapters (``TeacherView``); None: not needed.

    Raises:
        UsageError: a checkpoint trained for another task, a colour/grey mismatch that cannot be
            adapted, or outputs that are not (B, num_classes) logits on a dry forward.
    """
    adapters = (input_size, normalize, output)
    recorded = loaded.hparams
    if recorded and all(a is None for a in adapters):  # a distill checkpoint: its recorded task must match
        if recorded["num_classes"] != num_classes:
            what = (f"is a {recorded['task']} model (one value)" if recorded.get("task", "classification") != "classification"
                    else f"predicts {recorded['num_classes']} classes")
            data = f"{num_classes} classes" if num_classes > 1 else "a numeric target (one value)"
            raise UsageError(f"teacher {loaded.spec} {what} but the data has {data}")
        if (loaded.data_hparams or {}).get("fitted") is not None and len(input_shape) == 1:
            input_shape = tuple(recorded["input_shape"])  # a table teacher reads the data's rows re-encoded by its own fit (attach)
        elif tuple(recorded["input_shape"]) != tuple(input_shape) and len(input_shape) == 1:
            raise UsageError(f"teacher {loaded.spec} reads rows of {recorded['input_shape'][0]} features, the data "
                             f"gives {input_shape[0]}: give the student's --data the teacher's columns, drop list "
                             "and encoding")
        if tuple(recorded["input_shape"]) != tuple(input_shape):
            raise UsageError(f"teacher {loaded.spec} takes inputs of shape {tuple(recorded['input_shape'])} but "
                             f"the data has {tuple(input_shape)} (--model.teacher_input_size adapts the size)")
    data_channels = input_shape[0]
    channels = first_conv_channels(loaded.network)
    if channels is not None and channels != data_channels and not (data_channels == 1 and channels == 3):
        raise UsageError(f"teacher {loaded.spec} takes {channels}-channel images but the data has {data_channels} "
                         f"channel{'s' if data_channels > 1 else ''} (grey and colour do not mix that way)")
    teacher: nn.Module = loaded.network
    grey_to_colour = channels is not None and channels != data_channels
    if grey_to_colour or any(a is not None for a in adapters):
        teacher = TeacherView(loaded.network, input_size, normalize, channels=channels if grey_to_colour else None,
                              output=output)
    teacher.requires_grad_(False)
    teacher.eval()
    check_teacher_outputs(teacher, loaded.spec, input_shape, num_classes)
    return teacher


@torch.no_grad()
def check_teacher_outputs(teacher: nn.Module, spec: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """A dry forward on two zero inputs: the teacher must return (2, num_classes) logits.

    Raises:
        UsageError: naming the shape it returned, or why it could not run on the data's inputs.
    """
    try:
        logits = teacher(torch.zeros(2, *input_shape))
    except UsageError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise UsageError(f"teacher {spec} cannot run on the data's inputs {tuple(input_shape)} "
                         f"({str(err).splitlines()[0][:200]}); see --model.teacher_input_size/teacher_normalize") from None
    if not isinstance(logits, Tensor):
        raise UsageError(f"teacher {spec} returns a {type(logits).__name__}, not a tensor of logits; pick them with "
                         "--model.teacher_output (a key, an index or an attribute name, e.g. logits or 0)")
    if tuple(logits.shape) != (2, num_classes):
        got = tuple(logits.shape)
        raise UsageError(f"teacher {spec} returns {got} for 2 inputs, expected (2, {num_classes}) logits for the "
                         f"data's {num_classes} classes (--model.teacher_kwargs '{{num_classes: {num_classes}}}' "
                         "or --model.teacher_output)")


def build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A torchvision architecture by name, built without pretrained weights (never downloads)."""
    from torchvision import models

    if name not in models.list_models():
        raise UsageError(f"torchvision has no model {name!r}; e.g. {', '.join(models.list_models()[:8])}, ... "
                         "(torchvision.models.list_models())")
    try:
        return models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"torchvision:{name} does not take {sorted(kwargs)}: {err}") from None


def build_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A timm architecture by name, built without pretrained weights (needs the optional ``timm``)."""
    try:
        timm = importlib.import_module("timm")
    except ModuleNotFoundError:
        raise UsageError("teacher timm:... needs the timm package: pip install timm") from None
    if not timm.list_models(name):
        raise UsageError(f"timm has no model {name!r} (timm.list_models())")
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"timm:{name} does not take {sorted(kwargs)}: {err}") from None


def build_imported(target: str, kwargs: dict[str, Any]) -> nn.Module:
    """``package.module:factory`` called with ``kwargs``: the user's own code, by the name they typed."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"teacher import:{target}: write import:package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise UsageError(f"teacher import:{target}: no module {err.name!r} (is it on PYTHONPATH?)") from None
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"teacher import:{target}: {module_name} has no {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(f"teacher import:{target}: {attribute} is not callable")
    try:
        network = factory(**kwargs)
    except TypeError as err:
        raise UsageError(f"teacher import:{target} does not take {sorted(kwargs)}: {err}") from None
    if not isinstance(network, nn.Module):
        raise UsageError(f"teacher import:{target} returned a {type(network).__name__}, not an nn.Module")
    return network


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt``/``.pth`` file read with ``weights_only=True``.

    A file holding ``{"state_dict": ...}`` (a Lightning checkpoint) or ``{"model": ...}`` gives that dict.

    Raises:
        UsageError: missing file, a pickle payload (refused, never run), no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"teacher weights {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise UsageError(f"teacher weights {path} are not a readable safetensors file ({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = (str(err).strip().splitlines() or ["unpickling failed"])[0]
        raise UsageError(f"teacher weights {path} refused: they hold more than tensors and plain values "
                         f"({first[:160]}); save a state dict or safetensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise UsageError(f"teacher weights {path} are truncated or not a torch.save file ({type(err).__name__})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"teacher weights {path} hold no state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Removes wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) that every key carries and the network lacks."""
    while not set(state) <= expected:
        prefix = next((p for p in STRIPPED_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(network: nn.Module, path: str | Path) -> None:
    """Loads ``path`` into ``network`` strictly, after stripping wrapper prefixes.

    Raises:
        UsageError: naming the first missing and unexpected keys, or the first shape that differs.
    """
    expected = set(network.state_dict())
    state = strip_prefixes(read_state_dict(path), expected)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UsageError(f"teacher weights {path} do not fit the network: missing {_first(missing)}, "
                         f"unexpected {_first(unexpected)}")
    own = network.state_dict()
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise UsageError(f"teacher weights {path}: {key} has shape {tuple(tensor.shape)}, the network "
                             f"{tuple(own[key].shape)} (check --model.teacher_kwargs, e.g. num_classes)")
    network.load_state_dict(state, strict=True)


def _first(keys: list[str], shown: int = 3) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")


def onnx_sidecar(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``distill.compress`` wrote beside an ONNX file (classes, input shape, the data's settings), or nothing
    for another framework's file."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}, {}
    try:
        spec = json.loads(sidecar.read_text())
        return ({"num_classes": int(spec["num_classes"]), "input_shape": list(spec["input_shape"]),
                 "task": spec.get("task", "classification")}, dict(spec.get("data") or {}))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{sidecar} is not the description distill.compress writes ({type(err).__name__})") from None


def load_program(path: str, trust_code: bool) -> nn.Module:
    """A TorchScript or ``torch.export`` program; these unpickle code, so only with ``trust_code``."""
    if not trust_code:
        raise UsageError(f"teacher {path} is a program (TorchScript or .pt2), which runs code when loaded; "
                         "pass --model.teacher_trust_code true if you trust it")
    if not Path(path).is_file():
        raise UsageError(f"teacher {path} not found")
    if path.endswith(".pt2"):
        return torch.export.load(path).module()
    return torch.jit.load(path, map_location="cpu")
