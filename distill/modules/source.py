"""The trained network a later stage starts from (pruning, quantization-aware training), checked against the data."""

from __future__ import annotations

from typing import Any

from distill.checkpoint import Trained, load_trained
from distill.data.split import split_difference
from distill.errors import UsageError


def load_source(source_ckpt: str, model: str | None, settings: dict[str, Any]) -> Trained:
    """``source_ckpt`` rebuilt, refused in one line when it is not the network or the data this stage has.

    Args:
        source_ckpt: The trained network's checkpoint.
        model: ``--model.model`` as given (None: the source's own architecture).
        settings: The stage's other settings (``num_classes`` and ``input_shape``, linked from the data).
    """
    source = load_trained(source_ckpt)
    if model is not None and model != source.hparams["model"]:
        raise UsageError(f"--model.model {model}: the source {source_ckpt} is a {source.hparams['model']}")
    num_classes, shape = settings.get("num_classes", 10), tuple(settings.get("input_shape", (1, 28, 28)))
    if source.hparams["num_classes"] != num_classes or tuple(source.hparams["input_shape"]) != shape:
        raise UsageError(f"source {source.path} was trained for {source.hparams['num_classes']} classes of "
                         f"{tuple(source.hparams['input_shape'])} inputs, the data has {num_classes} of {shape}")
    return source


def check_same_split(source: Trained, data: Any) -> None:
    """A stage fine-tuning ``source`` must see the split it was trained on: under another split, rows
    it learned from would be among this run's validation and test rows, and its figures would flatter it.

    Raises:
        UsageError: naming the first setting that differs and the value to give.
    """
    difference = split_difference(source.data_hparams, data)
    if difference is not None:
        key, there, here = difference
        raise UsageError(f"{source.path} was trained on another split of the data ({key}: {there!r} there, {here!r} "
                         f"here): its training rows would be scored as unseen; give --data.{key} {there}")
