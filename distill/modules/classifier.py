"""The supervised training system shared by every stage: model, metrics, optimization, logging."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import grad_norm
from torch import Tensor, nn
from torchmetrics import MetricCollection

from distill import optim
from distill.data import DATA_MODULES
from distill.data.interface import target_scale_of, task_of
from distill.errors import DivergenceError, UsageError
from distill.models import NetworkOrName, count_parameters, create_model, object_name
from distill.models.trees import GradientBoostedTrees, fitted_trees_in
from distill.rng import replay_loader_seed_draw, rng_states, set_rng_states
from distill.tasks import get_task

# inputs (B, ...), labels (B,) and, from a DataModule answering DistillData, dataset indices (B,)
Batch = tuple[Tensor, Tensor, Tensor] | tuple[Tensor, Tensor]


def unpack(batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(inputs, labels, indices)`` of a batch; indices None for a plain ``(inputs, labels)`` batch."""
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]  # type: ignore[misc]
    if len(batch) == 2:
        return batch[0], batch[1], None
    raise UsageError(f"a batch must be (inputs, labels) or (inputs, labels, indices), got {len(batch)} parts")


def logs_this_step(trainer: Any) -> bool:
    """Whether the loggers write on the current training step (public Trainer state only).

    Lightning writes when the count of optimizer steps taken, plus the one under way, is a multiple
    of ``log_every_n_steps``, or when the run is stopping; ``tests/test_modules.py`` checks this
    against Lightning's own (private) answer, so a change of rule upstream fails there first.
    """
    return (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0 or trainer.should_stop


def build_network(model: NetworkOrName, model_kwargs: dict[str, Any] | None, num_classes: int,
                  input_shape: tuple[int, ...]) -> nn.Module:
    """The network a system trains: a registry architecture, freshly initialized, or the module given."""
    if isinstance(model, nn.Module):
        return model
    return create_model(model, num_classes=num_classes, in_channels=input_shape[0], **(model_kwargs or {}))


def check_settings(lr: float = 3e-3, weight_decay: float = 0.0, l2: float = 0.0, label_smoothing: float = 0.0,
                   warmup_steps: int = 0, warmup_fraction: float = 0.0, optimizer: str = "adamw",
                   scheduler: str = "onecycle", **_: Any) -> None:
    """Refuses out-of-range or unknown training settings in one line, without building anything.

    The system's constructor calls it first; ``distill.tune`` calls it on every choice of a search
    space before the first trial (the ``**_`` takes the system's other settings).
    """
    if not lr > 0:
        raise UsageError(f"lr must be > 0, got {lr}")
    if weight_decay < 0 or l2 < 0:
        raise UsageError(f"weight_decay and l2 must be >= 0, got {weight_decay} and {l2}")
    if not 0.0 <= label_smoothing < 1.0:
        raise UsageError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if warmup_steps < 0 or not 0.0 <= warmup_fraction < 1.0:
        raise UsageError(f"warmup_steps must be >= 0 and warmup_fraction in [0, 1), got {warmup_steps}, {warmup_fraction}")
    optim.OPTIMIZERS.get(optimizer)  # unknown names fail here, before any training
    optim.SCHEDULES.get(scheduler)


def _holds_module(value: Any) -> bool:
    return isinstance(value, nn.Module) or (isinstance(value, (list, tuple)) and any(_holds_module(v) for v in value))


def objects_given(system: nn.Module) -> list[str]:
    """Constructor arguments, of every class in ``system``'s chain, that hold modules rather than plain values.

    They are not hyperparameters: each system records them by name (the model's class, the teacher's
    spec, the method's registry name), so checkpoints hold plain values only.
    """
    names: list[str] = []
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is system:
            info = inspect.getargvalues(frame)
            values = {name: info.locals.get(name) for name in info.args[1:]}
            values.update(info.locals.get(info.keywords) or {} if info.keywords else {})
            names += [name for name, value in values.items() if _holds_module(value)]
        frame = frame.f_back
    return names


def refuse_unlabelled_rows(system: Any, data: Any) -> None:
    """Synthetic rows are labelled by a teacher: a stage without one cannot train on them."""
    if not system.distills and getattr(data, "synthetic_rows", 0):
        raise UsageError(f"--data.augment {data.hparams.get('augment')}: synthetic rows are labelled by a teacher, and "
                         "this stage trains on labels alone; use it in the student stage (drop it here)")


def check_fits_data(system: Any, data: Any) -> None:
    """A system built from Python with settings other than its data's (the command line links them) would
    train or record the wrong thing with no word: its task, output width, input shape and target scale
    must be the data's."""
    if data is None or not hasattr(data, "num_classes"):
        return
    h = system.hparams
    scale = h.get("target_scale")
    for what, own, theirs in (("task", system.task.name, task_of(data)),
                              ("num_classes", h.num_classes, data.num_classes),
                              ("input_shape", tuple(h.input_shape), tuple(data.input_shape)),
                              ("target_scale", None if scale is None else tuple(float(v) for v in scale),
                               target_scale_of(data))):
        if own != theirs:
            raise UsageError(f"{type(system).__name__}({what}={own!r}) does not fit the data, whose {what} is "
                             f"{theirs!r}: build it with {what}=data.{what} (the command line links them)")


class ClassifierSystem(LightningModule):
    """Trains ``self.model`` on labelled inputs; subclasses say what the training loss terms are.

    The data's task (``distill.tasks``: classification, regression, ...) says how the labels are
    learned and scored; this system asks it and never branches on its name.

    Args:
        model: Architecture name from the registry (``distill.models.list_models()``); from Python,
            also an ``nn.Module`` (trained in place; recorded by class name, not stored in hparams).
        model_kwargs: Options of the architecture factory, e.g. ``{"dropout": 0.3, "bn": true}``.
        num_classes: Output classes (linked from the data by the CLI).
        input_shape: Shape of one input, (C, H, W) for images, (F,) for table rows (linked from the data by the CLI).
        task: A registered task (``distill.tasks.TASKS``): ``classification`` or ``regression`` (linked from the data by the CLI).
        target_scale: Regression: mean and standard deviation of the training targets (linked from the data).
        optimizer: sgd, adam, adamw, adamax, adagrad, adadelta or rmsprop.
        lr: Peak learning rate, > 0.
        momentum: Momentum for sgd and rmsprop.
        nesterov: Nesterov momentum for sgd.
        betas: Adam-family moment decay rates.
        eps: Adam-family / RMSprop / Adagrad / Adadelta epsilon.
        weight_decay: Decoupled weight decay given to the optimizer.
        l2: Coefficient lambda of the classic penalty lambda/2 * sum ||W||^2 added to the loss.
        decay_norm_and_bias: Also decay (and L2-penalize) biases and normalization parameters.
        scheduler: constant, cosine, step, multistep, exponential, polynomial, onecycle or plateau.
        warmup_steps: Linear warmup steps before the schedule (wins over warmup_fraction).
        warmup_fraction: Linear warmup as a fraction of all steps.
        gamma: Decay factor of step/multistep/plateau; for exponential, the factor reached at the end.
        step_size: Steps between decays of the step schedule.
        milestones: multistep decay points: fractions of training (<= 1) or step counts.
        power: Exponent of the polynomial schedule.
        min_lr_ratio: Floor of cosine/polynomial/onecycle as a fraction of lr.
        plateau_patience: Epochs without improvement of the monitored validation figure before plateau decays the LR.
        label_smoothing: Label smoothing of the cross-entropy, in [0, 1) (classification).
        channels_last: Keep conv weights and inputs in NHWC memory order (faster convolutions on
            CPU with oneDNN and on GPU tensor cores; the numbers computed are the same).
        compile: Compile the trained network's forward with ``torch.compile`` (in place: checkpoints
            and their keys are unchanged). Pays off for long runs on a GPU; measure on a CPU.
    """

    def __init__(
        self,
        model: NetworkOrName,
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        input_shape: tuple[int, ...] = (1, 28, 28),
        task: str = "classification",
        target_scale: tuple[float, float] | None = None,
        optimizer: str = "adamw",
        lr: float = 3e-3,
        momentum: float = 0.9,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.05,
        l2: float = 0.0,
        decay_norm_and_bias: bool = False,
        scheduler: str = "onecycle",
        warmup_steps: int = 0,
        warmup_fraction: float = 0.0,
        gamma: float = 0.1,
        step_size: int = 1000,
        milestones: tuple[float, ...] = (0.5, 0.75),
        power: float = 1.0,
        min_lr_ratio: float = 0.0,
        plateau_patience: int = 3,
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        check_settings(lr=lr, weight_decay=weight_decay, l2=l2, label_smoothing=label_smoothing,
                       warmup_steps=warmup_steps, warmup_fraction=warmup_fraction, optimizer=optimizer,
                       scheduler=scheduler)
        self.task = get_task(task)
        self.task.check_outputs(num_classes)
        self.save_hyperparameters(ignore=objects_given(self))
        self.hparams["model"] = object_name(model) if isinstance(model, nn.Module) else model
        network = build_network(model, model_kwargs, num_classes, tuple(input_shape))
        self.model = self.to_memory_format(self.task.wrap(network, target_scale))
        if compile:
            self.model.compile()
        self.fit_report: dict[str, Any] = {}  # what fitting trees found (their number), for metrics.json
        self._l2_params: list[Tensor] | None = None  # decayed parameters, split once on first use
        self._bad_step: Tensor | None = None  # first step with a non-finite loss, -1 while none (on device)
        self._bad_terms: Tensor | None = None  # loss and terms at that step
        self._term_names: list[str] = []
        self._loss_sums: Tensor | None = None  # loss and terms summed since the last logged step (on device)
        self._loss_count = 0
        self._resumed_rng: dict[str, Any] | None = None  # RNG states of a checkpoint being resumed, until training starts
        self._train_preds: list[Tensor] = []  # predicted classes or values (B,) of this epoch's training batches
        self._train_labels: list[Tensor] = []
        metrics = self.task.metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @property
    def monitor(self) -> str:
        """The validation figure that picks the best checkpoint (higher is better): the task's."""
        return self.task.monitor

    def supervised_loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """The labels' loss, as the task defines it (label smoothing applies to classes)."""
        return self.task.supervised_loss(outputs, labels, self.model, self.hparams.label_smoothing)

    def report_metrics(self) -> dict[str, Any]:
        """What this stage adds to ``metrics.json`` beyond the test figures (plain values)."""
        return dict(self.fit_report)

    @property
    def fitted_trees(self) -> GradientBoostedTrees | None:
        """The network when it is fitted on all rows at once rather than by gradient steps (gradient-boosted trees)."""
        return fitted_trees_in(self.model)

    def fit_rows(self, data: Any, seed: int) -> dict[str, Any]:
        """Fits ``fitted_trees`` on the data's training rows, stopping early on its validation rows.

        The rows are the ones a network would train on, preprocessed alike; a regression target is
        fitted z-scored, as a network learns it (its ``TargetScale`` gives the units back).

        Raises:
            UsageError: data that is not table rows, or that has no validation rows to stop on.
        """
        trees = self.fitted_trees
        assert trees is not None
        if not hasattr(data, "labelled_rows") or len(self.hparams.input_shape) != 1:
            raise UsageError(f"{self.hparams.model} fits table rows (--data tabular); this data gives inputs of shape "
                             f"{tuple(self.hparams.input_shape)}")
        data.setup("fit")
        refuse_unlabelled_rows(self, data)
        (train_x, train_y), (val_x, val_y) = data.labelled_rows("train"), data.labelled_rows("val")
        if len(val_x) == 0:
            raise UsageError(f"{self.hparams.model} stops adding trees on the validation rows and there are none: "
                             "--data.val_fraction above 0")
        train_y, val_y = self.task.learned(train_y, self.model), self.task.learned(val_y, self.model)
        self.fit_report = trees.fit((train_x.numpy(), train_y.numpy()), (val_x.numpy(), val_y.numpy()), seed,
                                    torch.get_num_threads(), list(getattr(data, "class_names", ()) or ()))
        return self.fit_report

    @property
    def distills(self) -> bool:
        """Whether this system learns from a teacher (the one answer to "is this a distillation run?")."""
        return False

    def to_memory_format(self, x: Any) -> Any:
        """A module or an (B, C, H, W) batch in this system's memory format."""
        if not self.hparams.channels_last:
            return x
        if isinstance(x, nn.Module):
            return x.to(memory_format=torch.channels_last)
        return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x

    @property
    def num_params(self) -> int:
        """Parameters of the trained network (not of a teacher or any other helper)."""
        return count_parameters(self.model)

    def forward(self, inputs: Tensor) -> Tensor:
        """Inference: model-ready inputs (B, ...) -> logits (B, num_classes)."""
        return self.model(inputs)

    def training_losses(self, images: Tensor, labels: Tensor, indices: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Student logits and the named loss terms of one training batch; subclasses override."""
        outputs = self.model(images)
        return outputs, {self.task.loss_term: self.supervised_loss(outputs, labels)}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, labels, indices = unpack(batch)
        logits, terms = self.training_losses(self.to_memory_format(images), labels, indices)
        if self.hparams.l2 > 0:
            if self._l2_params is None:  # the same tensors every step: split once
                self._l2_params, _ = optim.split_decay_groups(self.model, self.hparams.decay_norm_and_bias)
            terms["l2"] = self.hparams.l2 * optim.l2_penalty(self._l2_params)
        loss = torch.stack(list(terms.values())).sum()
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in terms.values())])  # (1+T,)
        names = list(terms)
        self._log_losses(values, names)
        # Predicted classes are kept and scored once at the epoch's end: a metric update per step costs
        # about a millisecond of Python, a few percent of a small model's step.
        self._train_preds.append(self.task.predicted(logits.detach()))  # (B,)
        self._train_labels.append(labels)
        self._watch_finite(values, names)
        return loss

    def _log_losses(self, values: Tensor, names: list[str]) -> None:
        """One place logs every term: the mean over the steps since the last logged one.

        Summed on the device every step and handed to ``self.log`` only on the steps the loggers
        write (``log_every_n_steps``): a ``self.log`` call costs about a millisecond of Python, a
        noticeable share of a small model's step, and a logged mean is less noisy than one step's value.
        """
        self._loss_sums = values if self._loss_sums is None else self._loss_sums + values
        self._loss_count += 1
        if not logs_this_step(self.trainer):
            return
        means = self._loss_sums / self._loss_count  # (1+T,)
        self._loss_sums, self._loss_count = None, 0
        self.log("train/loss", means[0], prog_bar=True, batch_size=1)
        for i, name in enumerate(names, start=1):
            self.log(f"train/loss_{name}", means[i], batch_size=1)

    def _watch_finite(self, values: Tensor, names: list[str]) -> None:
        """Remembers the first step whose loss (``values[0]``) is not finite, on the device (no host sync per step)."""
        if self._bad_step is None or self._bad_terms is None:
            self._bad_step = torch.full((), -1, device=values.device, dtype=torch.long)
            self._bad_terms = torch.zeros_like(values)
            self._term_names = ["loss", *names]
        newly_bad = ~torch.isfinite(values[0]) & (self._bad_step < 0)
        self._bad_step = torch.where(newly_bad, self.trainer.global_step, self._bad_step)
        self._bad_terms = torch.where(newly_bad, values, self._bad_terms)
        if self.device.type == "cpu" or self.trainer.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.check_finite()

    def check_finite(self) -> None:
        """Stops training (before any checkpoint is written from bad weights) if a loss was not finite."""
        if self._bad_step is not None and self._bad_terms is not None and int(self._bad_step) >= 0:
            terms = ", ".join(f"{n}={v:.4g}" for n, v in zip(self._term_names, self._bad_terms.tolist()))
            raise DivergenceError(f"training diverged: non-finite loss at step {int(self._bad_step)} ({terms}); "
                                  "the checkpoints on disk are from before it. Lower --model.lr or clip gradients "
                                  "(--trainer.gradient_clip_val)")

    def setup(self, stage: str) -> None:
        check_fits_data(self, self.trainer.datamodule)
        refuse_unlabelled_rows(self, self.trainer.datamodule)

    def on_validation_start(self) -> None:
        self.check_finite()  # checkpoints are written after validation: never from diverged weights

    def on_train_epoch_end(self) -> None:
        # Epoch-level training metrics, logged once per epoch rather than registered on every step.
        if self._train_preds:
            preds, labels = torch.cat(self._train_preds), torch.cat(self._train_labels)
            known = self.task.labelled(labels)  # synthetic rows (no label) are not scored
            self.train_metrics.update(preds[known], labels[known])
            self._train_preds, self._train_labels = [], []
            self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def _evaluate(self, batch: Batch, metrics: MetricCollection, stage: str) -> None:
        images, labels, _ = unpack(batch)
        outputs = self(self.to_memory_format(images))
        loss = self.task.eval_loss(outputs, labels)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=labels.shape[0])
        metrics.update(self.task.scored(outputs), labels)
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=labels.shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Gradients here are unscaled (AMP) but not yet clipped: this is the pre-clipping norm.
        if logs_this_step(self.trainer):
            self.log("train/grad_norm", grad_norm(self.model, norm_type=2)["grad_2.0_norm_total"], batch_size=1)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = optim.build_optimizer(hp.optimizer, self.trainable_module(), lr=hp.lr, weight_decay=hp.weight_decay,
                                    decay_norm_and_bias=hp.decay_norm_and_bias, momentum=hp.momentum,
                                    nesterov=hp.nesterov, betas=tuple(hp.betas), eps=hp.eps)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = optim.warmup_steps_for(total, hp.warmup_steps, hp.warmup_fraction, hp.scheduler)
        schedule = optim.build_scheduler(hp.scheduler, opt, total, warmup, gamma=hp.gamma, step_size=hp.step_size,
                                         milestones=tuple(hp.milestones), power=hp.power, min_lr_ratio=hp.min_lr_ratio)
        schedulers = [{"scheduler": schedule, "interval": "step", "name": "lr"}]
        if hp.scheduler == optim.PLATEAU:
            plateau = optim.build_plateau(opt, mode="max", gamma=hp.gamma, patience=hp.plateau_patience)
            schedulers.append({"scheduler": plateau, "interval": "epoch", "monitor": self.monitor})
        return [opt], schedulers

    def on_train_epoch_start(self) -> None:
        # Resuming: the generators continue exactly where the interrupted run saved them (at the end
        # of the epoch before), whatever the trainer drew while setting up.
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng)
            self._resumed_rng = None
            replay_loader_seed_draw(self.trainer.train_dataloader)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng = checkpoint.get("rng_states")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Saved at an epoch's end: the states the next epoch starts from (dropout, augmentation).
        checkpoint["rng_states"] = rng_states()
        # The data's registry name: distill.evaluate rebuilds the test data from it and the saved arguments.
        try:
            data = self.trainer.datamodule
        except RuntimeError:  # not attached to a Trainer
            data = None
        checkpoint["data_module"] = DATA_MODULES.name_of(data)

    def trainable_module(self) -> nn.Module:
        """The modules whose parameters the optimizer updates (the student and any method parts)."""
        return self.model
