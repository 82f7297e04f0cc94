"""The command line of the training stages: one LightningCLI per stage, over its system and the data.

Every ``--trainer.*``, ``--model.*``, ``--data.*`` flag, ``--config FILE`` and ``--print_config``
work as in any Lightning project. A bare command runs the stage's default recipe, the YAML file
in ``teachers/`` named in ``STAGES`` (so the numbers of the demo are written down once).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule, Trainer
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

from distill.checkpoint_io import AtomicCheckpointIO
from distill.data import DATA_MODULES
from distill.data.interface import target_scale_of, task_of
from distill.errors import UsageError
from distill.run_dir import check_output_dir
from distill.losses import DISTILLERS
from distill.modules import ClassifierSystem, DistillModule, PruneModule, QATModule, TeacherModule

RECIPES = Path(__file__).resolve().parents[1] / "teachers"

# stage -> (training system, description, the recipe a bare command runs). A new stage is one entry here.
STAGES: dict[str, tuple[type[ClassifierSystem], str, Path]] = {
    "teacher": (TeacherModule, "train a network on labels (the teacher)",
                RECIPES / "fashion_mnist" / "cnn_wide.yaml"),
    "student": (DistillModule, "distill a frozen teacher into a smaller network (the student)",
                RECIPES / "fashion_mnist" / "cnn_wide-to-cnn_mini.yaml"),
    "prune": (PruneModule, "remove channels of a trained network, then fine-tune it against the teacher",
              RECIPES / "fashion_mnist" / "cnn_wide-to-cnn_mini-pruned.yaml"),
    "qat": (QATModule, "fine-tune a trained network int8-aware (fake quantization) against the teacher",
            RECIPES / "fashion_mnist" / "cnn_wide-to-cnn_mini-qat.yaml"),
}

DEFAULT_DATA = "images"  # the DataModule a stage uses unless --data names another


# flag -> how a registered name given to it becomes an import path
CLASS_FLAGS = {"--model.method": DISTILLERS.import_path, "--model.method.help": DISTILLERS.import_path,
               "--data": DATA_MODULES.import_path, "--data.help": DATA_MODULES.import_path}


def select_classes(args: list[str]) -> list[str]:
    """Lets ``--model.method NAME`` and ``--data NAME`` name registered classes (``dkd``, ``images``, ...).

    The name becomes the class's import path, and the arguments given earlier for another class
    (say, by the default recipe) are dropped first, so a newly chosen method starts from its own
    defaults rather than another method's values. ``--model.method.help NAME`` lists its settings.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        flag, value, joined = args[i], None, False
        if "=" in flag and flag.split("=", 1)[0] in CLASS_FLAGS:
            flag, value = flag.split("=", 1)
            joined = True
        elif flag in CLASS_FLAGS and i + 1 < len(args):
            value = args[i + 1]
        if value is None or value.lstrip().startswith(("{", "null")):
            out.append(args[i])
            i += 1
            continue
        if not flag.endswith(".help"):
            out += [flag, "null"]
        out += [flag, CLASS_FLAGS[flag](value)]
        i += 1 if joined else 2
    return out


def config_resets_data(args: list[str]) -> list[str]:
    """A ``--config FILE`` whose data names its own class (``class_path``) starts that class from its own defaults.

    Otherwise the arguments the default recipe gave the default DataModule (images) that the named class
    also takes would carry over unseen: a table recipe's ``val_fraction`` would be the image data's 0.1
    instead of the table's 0.15, and its split not the one the same run from flags gets.
    """
    import yaml

    out: list[str] = []
    for i, arg in enumerate(args):
        flag, _, joined = arg.partition("=")
        path = joined if joined else (args[i + 1] if flag == "--config" and i + 1 < len(args) else "")
        if flag == "--config" and Path(path).is_file():
            try:
                data = (yaml.safe_load(Path(path).read_text()) or {}).get("data")
            except (yaml.YAMLError, AttributeError):
                data = None  # the parser says what is wrong with the file
            if isinstance(data, dict) and "class_path" in data:
                out += ["--data", "null"]
        out.append(arg)
    return out


TEACHER_FLAGS = ("--model.teacher", "--model.teacher_ckpt")


def name_teacher_once(args: list[str]) -> list[str]:
    """``--model.teacher X`` and its older name ``--model.teacher_ckpt X`` both set ``teacher``.

    The other name is reset first, so a teacher typed on the command line replaces the one a
    recipe (or an older config written with ``teacher_ckpt``) named, whichever name each used.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        flag, _, joined = args[i].partition("=")
        if flag not in TEACHER_FLAGS or (not joined and i + 1 >= len(args)):
            out.append(args[i])
            i += 1
            continue
        value = joined if joined else args[i + 1]
        out += ["--model.teacher_ckpt", "null", "--model.teacher", value]
        i += 1 if joined else 2
    return out


def method_follows_data(args: list[str]) -> list[str]:
    """A distillation stage given other data (``--data NAME``) but no method uses that data's task's default method.

    A stage's default recipe names the method tuned for its own data (KD at T=2 on Fashion-MNIST);
    on another DataModule without ``--model.method`` or ``--config``, the method is the task's own
    default (``kd``; ``regression_kd`` for a regression target) instead of the recipe's. A method the
    user names is kept, and one that does not fit the task stays a one-line error.
    """
    flags = [arg.split("=", 1)[0] for arg in args]
    other_data = "--data" in flags
    named = any(flag.startswith("--model.method") or flag == "--config" for flag in flags)
    return ["--model.method", "null", *args] if other_data and not named else args


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
        module_class, description, recipe = STAGES[stage]
        parser_kwargs: dict[str, Any] = {"prog": f"python -m distill.train {stage}", "description": description,
                                         "exit_on_error": False}
        if recipe.is_file():  # the demo's recipe is what a bare command runs: one source for its numbers
            parser_kwargs["default_config_files"] = [str(recipe)]
        super().__init__(
            model_class=module_class,
            datamodule_class=LightningDataModule,  # any DataModule answering distill.data.DistillData
            subclass_mode_data=True,
            save_config_callback=None,  # config.yaml goes to the run directory, written by run_stage
            seed_everything_default=0,
            run=False,
            args=name_teacher_once(select_classes(config_resets_data(
                method_follows_data(args) if issubclass(module_class, DistillModule) else args))),
            auto_configure_optimizers=False,  # the module owns its optimizer and schedule, by name
            load_from_checkpoint_support=False,  # keep hyperparameters plain values
            parser_kwargs=parser_kwargs,
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
                            help="Stop when the monitored validation figure (val/acc; regression: val/r2) has "
                                 "not improved for this many validations (0: never).")
        parser.set_defaults({"data": {"class_path": DATA_MODULES.import_path(DEFAULT_DATA)}})
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        # Optional members of the data interface: a DataModule that does not say is classification.
        parser.link_arguments("data", "model.task", compute_fn=task_of, apply_on="instantiate")
        parser.link_arguments("data", "model.target_scale", compute_fn=target_scale_of, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        check_output_dir(Path(self.config.run_dir), "--run_dir")  # before any data is read or network built
        trainer_cfg = self.config.trainer
        check_devices(trainer_cfg.get("accelerator"), trainer_cfg.get("devices"))
        callbacks: list[Callback] = []
        if trainer_cfg.get("logger") is not False:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if trainer_cfg.get("enable_model_summary") is not False:
            callbacks.append(RichModelSummary(max_depth=2))
        if trainer_cfg.get("enable_progress_bar") is not False:
            callbacks.append(ProgressBar(refresh_rate=10))
        self.trainer_defaults["callbacks"] = callbacks

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        run_dir = Path(self.config.run_dir)
        # The model exists by now: it names the figure that picks the best checkpoint (its data's task).
        monitor = self.model.monitor
        watchers: list[Callback] = [
            ModelCheckpoint(dirpath=str(run_dir), filename="best", monitor=monitor, mode="max", save_last=True,
                            auto_insert_metric_name=False, enable_version_counter=False),
        ]
        if self.config.early_stopping_patience > 0:
            watchers.append(EarlyStopping(monitor=monitor, mode="max", patience=self.config.early_stopping_patience))
        self.trainer_defaults["callbacks"] = [*watchers, *self.trainer_defaults.get("callbacks", [])]
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


def usage() -> str:
    lines = ["usage: python -m distill.train {%s} [options]" % ",".join(STAGES), "", "stages:"]
    lines += [f"  {name:<9} {description}" for name, (_, description, _) in STAGES.items()]
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
