"""Running one training stage: resume, the LR range test, batch scaling, fit, then ``finish_stage``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import nn
from lightning.pytorch.utilities import rank_zero_info

from distill import cost
from distill import run_dir as rundir
from distill.checkpoint import load_checkpoint, load_trained
from distill.cli import DistillCLI
from distill.data.interface import check_data
from distill.errors import UsageError
from distill.export import description, export_onnx
from distill.finish import finish_stage
from distill.lr_find import PLOT, find_lr
from distill.models import create_model, list_models
from distill.models.trees import LIBRARIES
from distill.modules import ClassifierSystem


def apply_batch_scaling(trainer: Trainer, module: ClassifierSystem, data: Any, base_batch: int) -> int:
    """Prints the effective batch size; with ``base_batch`` > 0 scales the learning rate linearly to it."""
    if base_batch < 0:
        raise UsageError(f"--scale_lr_base_batch must be >= 0, got {base_batch}")
    effective = data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    parts = (f"{data.batch_size} per device x {trainer.num_devices} device(s) x {trainer.num_nodes} node(s) x "
             f"{trainer.accumulate_grad_batches} accumulation")
    if base_batch:
        before = module.hparams.lr
        module.hparams.lr = before * effective / base_batch
        rank_zero_info(f"effective batch size {effective} ({parts}); lr scaled {before:.3g} -> "
                       f"{module.hparams.lr:.3g} (x {effective}/{base_batch})")
    else:
        rank_zero_info(f"effective batch size {effective} ({parts}); lr {module.hparams.lr:.3g}")
    return effective


def resolve_resume(ckpt_path: str | None, run_dir: Path, module: ClassifierSystem) -> str | None:
    """Maps ``last`` to ``run_dir/last.ckpt`` and checks the file loads safely and fits this run's
    networks before Lightning reads it."""
    if ckpt_path is None:
        return None
    path = run_dir / rundir.LAST if ckpt_path == "last" else Path(ckpt_path)
    checkpoint = load_checkpoint(path)  # missing / truncated / pickle payload -> one-line error, nothing executed
    saved = checkpoint.get("hyper_parameters", {}).get("model")
    own = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith("teacher.")}
    theirs = {k: tuple(v.shape) for k, v in checkpoint.get("state_dict", {}).items()}
    differing = next((k for k in own if k in theirs and own[k] != theirs[k]), None)
    missing = next((k for k in own if k not in theirs), None)
    if saved != module.hparams.model or differing or missing:
        what = (f"{differing} is {theirs[differing]} there, {own[differing]} here" if differing
                else f"it has no {missing}" if missing else "")
        raise UsageError(f"--ckpt_path {path} was saved by a {saved} run, this run builds {module.hparams.model}"
                         f"{f' ({what})' if what else ''}: resume with the settings it was trained with")
    return str(path)


def check_network_reads(module: ClassifierSystem, input_shape: tuple[int, ...]) -> None:
    """A network that cannot take the data's inputs (an image network given table rows) is one line before
    training, naming the registered architectures that can, rather than a traceback from its first step."""
    if module.fitted_trees is not None:
        return  # fitted on the rows themselves; it reads whatever width they have
    training = module.model.training
    try:
        refusal = refused(module.model, input_shape)
    finally:
        module.model.train(training)
    if isinstance(refusal, UsageError):
        raise refusal
    if refusal is not None:
        readers = [name for name in list_models()
                   if refused(create_model(name, num_classes=2, in_channels=input_shape[0]), input_shape) is None]
        fitted = f" (or a tree teacher: {', '.join(LIBRARIES)})" if len(input_shape) == 1 else ""
        raise UsageError(f"--model.model {module.hparams.model} cannot read this data's inputs of shape "
                         f"{tuple(input_shape)} ({str(refusal).splitlines()[0][:120]}); these can: "
                         f"{', '.join(readers) or 'none registered'}{fitted}")


def refused(network: nn.Module, input_shape: tuple[int, ...]) -> Exception | None:
    """What ``network`` (put in eval mode) raises on two zero inputs of ``input_shape``; None if it reads them."""
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(2, *input_shape))
    except Exception as err:  # noqa: BLE001 (whatever the layer that refuses the shape raises)
        return err
    return None


def run_stage(cli: DistillCLI) -> dict[str, Any]:
    """Fits, tests the best and last checkpoints, writes metrics.json; returns the metrics."""
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    check_data(data)
    check_network_reads(module, tuple(data.input_shape))
    run_dir = Path(cli.config.run_dir)
    if module.fitted_trees is not None and (cli.config.lr_find or cli.config.ckpt_path):
        raise UsageError(f"{module.hparams.model} is fitted in one pass, not trained by gradient steps: it has no "
                         "learning rate to search (--lr_find) and nothing to resume (--ckpt_path)")
    resume = resolve_resume(cli.config.ckpt_path, run_dir, module)
    if cli.config.lr_find == "show":
        suggestion = find_lr(trainer, module, data, run_dir)
        print(f"suggested learning rate: {suggestion:.3g} (plot: {run_dir / PLOT}); "
              f"train with it: --model.lr {suggestion:.3g}, or --lr_find apply")
        return {"lr_suggestion": suggestion}
    with rundir.replacing(run_dir, overwrite=cli.config.overwrite, resume=resume is not None,
                          resumable=module.fitted_trees is None) as replacing:
        return run_in_dir(cli, resume, replacing)


def run_in_dir(cli: DistillCLI, resume: str | None, replacing: bool) -> dict[str, Any]:
    """The stage inside its run directory: config.yaml, the fit (or the trees'), then ``finish_stage``.
    ``replacing``: an earlier run's outputs were moved aside, and come back if this one does not finish."""
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    run_dir = Path(cli.config.run_dir)
    if trainer.is_global_zero:
        rundir.atomic_write_text(run_dir / rundir.CONFIG, cli.parser.dump(cli.config))
    if module.fitted_trees is not None:  # fitted on all rows at once: no epochs, no optimizer steps
        return fit_trees(cli, time.perf_counter())
    if cli.config.lr_find == "apply":
        module.hparams.lr = find_lr(trainer, module, data, run_dir)
        print(f"training with the suggested learning rate {module.hparams.lr:.3g} (plot: {run_dir / PLOT})")
    apply_batch_scaling(trainer, module, data, cli.config.scale_lr_base_batch)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
    train_seconds = time.perf_counter() - start
    if trainer.interrupted:
        if replacing:
            raise UsageError(f"training was interrupted; the run it was replacing is back in {run_dir} "
                             "(--overwrite true starts over)")
        raise UsageError("training was interrupted; resume it with --ckpt_path last")
    if trainer.global_step == 0:
        batches = trainer.num_training_batches
        raise UsageError(f"training took no optimizer step ({batches} training batches per epoch, max_epochs "
                         f"{trainer.max_epochs}): nothing was learned, so no result is reported; check the data "
                         "size against --data.batch_size, --trainer.limit_train_batches and --trainer.max_epochs")
    return finish_stage(trainer, module, data, cli.stage, run_dir, cli.config.seed_everything, train_seconds)


def fit_trees(cli: DistillCLI, start: float) -> dict[str, Any]:
    """The teacher stage of gradient-boosted trees: fitted on the training rows with early stopping on the
    validation rows, saved as ``best.ckpt`` with the library's own file and the ONNX export beside it, then
    tested and reported like any teacher."""
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    run_dir = Path(cli.config.run_dir)
    if trainer.world_size > 1:
        raise UsageError(f"{module.hparams.model} is fitted in one process: --trainer.devices 1")
    found = module.fit_rows(data, cli.config.seed_everything or 0)
    train_seconds = time.perf_counter() - start
    trees = module.fitted_trees
    native = run_dir / rundir.NATIVE[trees.library]
    rundir.atomic_write_bytes(native, trees.native_bytes())
    rank_zero_info(f"{module.hparams.model}: {found['boosting_rounds']} boosting rounds, {found['trees']} trees "
                   "(early stopping on the validation rows)")
    metrics = finish_stage(trainer, module, data, cli.stage, run_dir, cli.config.seed_everything, train_seconds)
    # The deployable file, as compress writes it: log-probabilities or the value in the target's units, with the
    # description that makes it a teacher, an evaluated or a predicting model on its own
    trained = load_trained(run_dir / rundir.BEST)
    export_onnx(trained.network, tuple(trained.hparams["input_shape"]), run_dir / rundir.ONNX_FILE)
    counted = cost.cost(trained.network, tuple(trained.hparams["input_shape"]))
    rundir.atomic_write_text(run_dir / rundir.ONNX_DESCRIPTION, json.dumps(
        description(trained, data.class_names, "onnx fp32", counted), indent=2) + "\n")
    print(f"written beside best.ckpt: {native.name} ({trees.library}'s own file), {rundir.ONNX_FILE} and "
          f"{rundir.ONNX_DESCRIPTION} (its ONNX file and what it reads)")
    return metrics
