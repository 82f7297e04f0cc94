"""Command line: ``python -m distill.train {teacher,student} [options]``.

Each stage is a LightningCLI over its LightningModule and the ImageDataModule, so every
``--trainer.*``, ``--model.*``, ``--data.*`` flag, ``--config FILE`` and ``--print_config`` work
as in any Lightning project. After fitting, the best checkpoint is tested once and its test
metrics are written to ``<run_dir>/metrics.json``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentError
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from distill import run_dir as rundir
from distill.checkpoint import load_checkpoint, load_trained
from distill.checkpoint_io import AtomicCheckpointIO
from distill.data import ImageDataModule
from distill.errors import DivergenceError, UsageError
from distill.lr_find import PLOT, find_lr
from distill.modules import ClassifierSystem, DistillModule, TeacherModule
from distill.report import print_summary

STAGES: dict[str, tuple[type[ClassifierSystem], str]] = {
    "teacher": (TeacherModule, "train a network on labels (the teacher)"),
    "student": (DistillModule, "distill a frozen teacher into a smaller network (the student)"),
}

# The CPU recipe a bare command runs (Fashion-MNIST): see the README's recipe notes.
STAGE_TRAINER_DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": {"max_epochs": 7},
    "student": {"max_epochs": 15},
}


class ProgressBar(RichProgressBar):
    """Rich progress bar that redraws every ``refresh_rate`` training steps, without the logger version.

    Lightning's rich bar updates its task, re-reads every progress-bar metric and refreshes on every
    training step whatever ``refresh_rate`` says (about a millisecond of Python, a few percent of a
    small model's step on a CPU); here the training bar only does so every ``refresh_rate`` steps
    and on an epoch's last step. The logger version is dropped: meaningless with a fixed run directory.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = batch_idx + 1
        if step % max(1, int(self.refresh_rate)) == 0 or step == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: Trainer, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class DistillCLI(LightningCLI):
    """LightningCLI for one stage; adds ``--run_dir``, ``--overwrite`` and ``--ckpt_path``."""

    def __init__(self, stage: str, args: list[str]) -> None:
        self.stage = stage
        module_class, description = STAGES[stage]
        super().__init__(
            model_class=module_class,
            datamodule_class=ImageDataModule,
            save_config_callback=None,  # config.yaml goes to the run directory, written by run_stage
            trainer_defaults=dict(STAGE_TRAINER_DEFAULTS[stage]),
            seed_everything_default=0,
            run=False,
            args=args,
            auto_configure_optimizers=False,  # the module owns its optimizer and schedule, by name
            load_from_checkpoint_support=False,  # keep hyperparameters plain values
            parser_kwargs={"prog": f"python -m distill.train {stage}", "description": description,
                           "exit_on_error": False},
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str, default=f"checkpoints/{self.stage}",
                            help="Directory for best.ckpt, last.ckpt, config.yaml, metrics.json and logs.")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="Replace the outputs of a previous run in run_dir.")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="Resume training: 'last' (run_dir/last.ckpt) or a checkpoint path.")
        parser.add_argument("--lr_find", type=Literal["show", "apply"] | None, default=None,
                            help="LR range test before training: 'show' prints the suggestion, saves "
                                 "run_dir/lr_find.png and stops; 'apply' then trains with it. A bare --lr_find is 'show'.")
        parser.add_argument("--scale_lr_base_batch", type=int, default=0,
                            help="Linear LR scaling (Goyal et al. 2017): multiply model.lr by the effective batch size "
                                 "(per-device batch x devices x nodes x accumulation) over this base. 0: off.")
        parser.add_argument("--early_stopping_patience", type=int, default=0,
                            help="Stop when val/acc has not improved for this many validations (0: never).")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.link_arguments("data.crop_fill", "model.tta_fill", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        trainer_cfg = self.config.trainer
        check_devices(trainer_cfg.get("accelerator"), trainer_cfg.get("devices"))
        callbacks: list[Callback] = [
            ModelCheckpoint(dirpath=self.config.run_dir, filename="best", monitor="val/acc", mode="max",
                            save_last=True, auto_insert_metric_name=False, enable_version_counter=False),
        ]
        if trainer_cfg.get("logger") is not False:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if self.config.early_stopping_patience > 0:
            callbacks.append(EarlyStopping(monitor="val/acc", mode="max", patience=self.config.early_stopping_patience))
        if trainer_cfg.get("enable_model_summary") is not False:
            callbacks.append(RichModelSummary(max_depth=2))
        if trainer_cfg.get("enable_progress_bar") is not False:
            callbacks.append(ProgressBar(refresh_rate=10))
        self.trainer_defaults["callbacks"] = callbacks

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        run_dir = Path(self.config.run_dir)
        kwargs.setdefault("default_root_dir", str(run_dir))
        if self.config.trainer.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(run_dir)
        if not self.config.trainer.get("plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def check_devices(accelerator: Any, devices: Any) -> None:
    """Refuses, before anything starts, to use accelerators or more devices than this machine has."""
    import torch

    name = str(accelerator or "auto").lower()
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UsageError(f"--trainer.accelerator {name}: no CUDA GPU is available on this machine")
    uses_gpu = name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available())
    available = torch.cuda.device_count() if uses_gpu else (os.cpu_count() or 1)
    kind = "GPU(s)" if uses_gpu else "CPU core(s)"
    if isinstance(devices, (list, tuple)):
        wanted = max((int(d) for d in devices), default=-1) + 1
    elif isinstance(devices, int) or (isinstance(devices, str) and devices.strip().lstrip("-").isdigit()):
        wanted = int(devices)
    else:
        return  # "auto" and the like: Lightning picks what exists
    if wanted > available:
        raise UsageError(f"--trainer.devices {devices}: this machine has {available} {kind}")


def default_loggers(run_dir: Path) -> list[Logger]:
    """CSV logs always; TensorBoard too when it is installed. Both under ``run_dir/logs``."""
    loggers: list[Logger] = [CSVLogger(str(run_dir), name="logs", version="")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(run_dir), name="logs", version="tensorboard",
                                         default_hp_metric=False))
    except ModuleNotFoundError:
        pass
    return loggers


def apply_batch_scaling(trainer: Trainer, module: ClassifierSystem, data: ImageDataModule, base_batch: int) -> int:
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


def resolve_resume(ckpt_path: str | None, run_dir: Path) -> str | None:
    """Maps ``last`` to ``run_dir/last.ckpt`` and checks the file loads safely before Lightning reads it."""
    if ckpt_path is None:
        return None
    path = run_dir / rundir.LAST if ckpt_path == "last" else Path(ckpt_path)
    load_checkpoint(path)  # missing / truncated / pickle payload -> one-line error, nothing executed
    return str(path)


def run_stage(cli: DistillCLI) -> dict[str, Any]:
    """Fits, tests the best checkpoint, writes metrics.json; returns the metrics."""
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    run_dir = Path(cli.config.run_dir)
    resume = resolve_resume(cli.config.ckpt_path, run_dir)
    if cli.config.lr_find == "show":
        suggestion = find_lr(trainer, module, data, run_dir)
        print(f"suggested learning rate: {suggestion:.3g} (plot: {run_dir / PLOT}); "
              f"train with it: --model.lr {suggestion:.3g}, or --lr_find apply")
        return {"lr_suggestion": suggestion}
    rundir.prepare_run_dir(run_dir, overwrite=cli.config.overwrite, resume=resume is not None)
    if cli.config.lr_find == "apply":
        module.hparams.lr = find_lr(trainer, module, data, run_dir)
        print(f"training with the suggested learning rate {module.hparams.lr:.3g} (plot: {run_dir / PLOT})")
    apply_batch_scaling(trainer, module, data, cli.config.scale_lr_base_batch)
    if trainer.is_global_zero:
        rundir.atomic_write_text(run_dir / rundir.CONFIG,
                                 cli.parser.dump(cli.config))
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
    train_seconds = time.perf_counter() - start
    if trainer.interrupted:
        raise UsageError("training was interrupted; resume it with --ckpt_path last")
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    best_val_acc = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None else None
    if checkpoint is not None and not best:
        # Fit ended before any validation (max_steps inside the first epoch): these weights are the best.
        best_val_acc = trainer.validate(module, datamodule=data, verbose=False)[0]["val/acc"]
        best = str(run_dir / rundir.BEST)
        trainer.save_checkpoint(best, weights_only=False)
    last = str(run_dir / rundir.LAST) if (run_dir / rundir.LAST).is_file() else ""
    if trainer.world_size > 1 and not trainer.is_global_zero:
        return {}
    metrics: dict[str, Any] = checkpoint_test_metrics(trainer, module, data, best)
    # The last epoch's weights too, so that best-epoch selection on validation can be told apart from it.
    last_metrics = checkpoint_test_metrics(trainer, module, data, last) if last and best else {}
    metrics.update({f"last_epoch/{key}": value for key, value in last_metrics.items()})
    metrics.update(
        stage=cli.stage,
        model=module.hparams.model,
        dataset=data.hparams.dataset,
        params=module.num_params,
        tta=module.hparams.tta,  # test figures are of the classifier averaged over these views
        best_val_acc=best_val_acc,
        checkpoint=best,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        seed=cli.config.seed_everything,
        train_seconds=round(train_seconds, 1),
    )
    if isinstance(module, DistillModule):
        metrics.update(teacher_ckpt=module.hparams.teacher_ckpt, teacher_params=module.teacher_params,
                       method=module.hparams.method, **module.distiller.settings(),
                       teacher_tta=module.teacher_tta,
                       # The teacher as it taught (its test-time augmentation included), on the same test set.
                       teacher_test_acc=model_test_metrics(module.teacher, data, trainer.strategy.root_device)["test/acc"])
    if trainer.is_global_zero:
        rundir.write_metrics(run_dir, metrics)
        print_summary(cli.stage, run_dir, metrics)
    return metrics


def checkpoint_test_metrics(trainer: Trainer, module: ClassifierSystem, data: ImageDataModule, checkpoint: str) -> dict[str, float]:
    """Test metrics of ``checkpoint`` (the module's current weights when empty), each test image counted once."""
    if trainer.world_size > 1:
        # A distributed sampler pads the test set by repeating samples; the final metrics must count
        # each test image once, so one process (the caller's rank 0) evaluates on the whole set.
        return exact_test_metrics(checkpoint, data, trainer.strategy.root_device)
    results = trainer.test(module, datamodule=data, ckpt_path=checkpoint or None, verbose=False, weights_only=True)
    return {k: float(v) for k, v in results[0].items()}


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips from the console; warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def exact_test_metrics(checkpoint: str, data: ImageDataModule, device: Any) -> dict[str, float]:
    """test/acc, test/f1 (macro) and test/loss of a checkpoint over the whole test set, in one process."""
    return model_test_metrics(load_trained(checkpoint).model, data, device)


def model_test_metrics(model: nn.Module, data: ImageDataModule, device: Any) -> dict[str, float]:
    """test/acc, test/f1 (macro) and test/loss of ``model`` over the whole test set, in one process."""
    from distill.evaluate import test_logits
    from distill.metrics import quality

    data.setup("test")
    logits, labels = test_logits(model, data, device)
    q = quality(logits, labels)
    return {"test/acc": q["acc"], "test/f1": q["f1"], "test/loss": q["nll"]}


def usage() -> str:
    lines = ["usage: python -m distill.train {teacher,student} [options]", "", "stages:"]
    lines += [f"  {name:<9} {description}" for name, (_, description) in STAGES.items()]
    lines += ["", "Options of a stage: python -m distill.train STAGE --help"]
    return "\n".join(lines)


def bare_flag_values(args: list[str]) -> list[str]:
    """Lets ``--lr_find`` stand alone on the command line, meaning ``--lr_find show``."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--lr_find" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("show")
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for bad input, with a one-line message)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    stage, rest = argv[0], bare_flag_values(argv[1:])
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; valid: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # The run directory is ours (config.yaml lands first); overwrites are guarded by prepare_run_dir.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # The frozen teacher is in eval mode on purpose (DistillModule.train keeps it there).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(_DropTips())
    try:
        cli = DistillCLI(stage, rest)
        run_stage(cli)
    except (UsageError, ArgumentError, DivergenceError) as err:
        if os.environ.get("DISTILL_DEBUG"):
            raise
        message = " ".join(str(err).split())  # one line, whatever the source
        print(f"error: {message}", file=sys.stderr)
        return 2 if not isinstance(err, DivergenceError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
