"""After fit: the test figures of the best and the last checkpoint, ``metrics.json`` and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from distill import run_dir as rundir
from distill.checkpoint import load_trained
from distill.inference import test_figures, test_outputs
from distill.modules import ClassifierSystem
from distill.report import print_summary
from distill.tasks import Task


def checkpoint_test_metrics(trainer: Trainer, module: ClassifierSystem, data: LightningDataModule,
                            checkpoint: str) -> dict[str, float]:
    """Test metrics of ``checkpoint`` (the module's current weights when empty), each test sample counted once."""
    if trainer.world_size > 1:
        # A distributed sampler pads the test set by repeating samples; the final metrics must count
        # each test sample once, so one process (the caller's rank 0) evaluates on the whole set.
        return test_figures(load_trained(checkpoint).network, data, trainer.strategy.root_device)
    results = trainer.test(module, datamodule=data, ckpt_path=checkpoint or None, verbose=False, weights_only=True)
    return {k: float(v) for k, v in results[0].items()}


NEAR_CHANCE = 0.05  # of the errors the best answer ignoring the inputs makes, at most this share removed


def warn_if_teacher_guesses(spec: str, figure: float, labels: Tensor, task: Task) -> None:
    """A teacher scoring hardly better than an answer that ignores the inputs (the test rows' most common
    class, the mean target) almost always reads inputs unlike those it was trained on (an ONNX file from
    another tool fed other preprocessing): said, since nothing else would say it. Counted from the test
    labels, so an honest teacher on a skewed or binary task is not taken for one that guesses."""
    floor, answer = task.chance(labels)
    if figure > floor + NEAR_CHANCE * (1 - floor):
        return
    rank_zero_warn(f"teacher {spec} scores {task.headline_label} {task.shown(figure)} on the test set, near chance "
                   f"(answering {answer} scores {task.shown(floor)}): does it read the inputs as it was trained? "
                   "(an ONNX teacher needs --data to prepare rows or images as its own training did)")


def finish_stage(trainer: Trainer, module: ClassifierSystem, data: LightningDataModule, stage: str,
                 run_dir: Path, seed: int | None, train_seconds: float) -> dict[str, Any]:
    """Tests the best and the last checkpoint, writes ``metrics.json`` and prints the summary (rank 0).

    Returns:
        The metrics (empty on other ranks).
    """
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    best_val = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None else None
    if checkpoint is not None and not best:
        # Fit ended before any validation (max_steps inside the first epoch): these weights are the best.
        best_val = trainer.validate(module, datamodule=data, verbose=False)[0][module.monitor]
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
        stage=stage,
        model=module.hparams.model,
        dataset=data.hparams.get("dataset"),
        params=module.num_params,
        task=module.hparams.task,
        monitor=module.monitor,
        **{f"best_{module.monitor.replace('/', '_')}": best_val},  # best_val_acc, or best_val_r2
        checkpoint=best,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        seed=seed,
        train_seconds=round(train_seconds, 1),
        # The same seed lands half a point apart at one and two CPU threads: a result says which it ran with.
        cpu_threads=torch.get_num_threads(),
    )
    metrics.update(module.report_metrics())
    teacher = getattr(module, "teacher", None)
    if module.distills and teacher is not None:
        # The teacher as it taught (its test-time views included), on the same test set; each of
        # several teachers too.
        device = trainer.strategy.root_device
        figure = module.task.headline  # teacher_test_acc, or teacher_test_r2
        outputs, labels = test_outputs(teacher, data, device)
        metrics[f"teacher_test_{figure}"] = module.task.test_figures(outputs, labels)[f"test/{figure}"]
        warn_if_teacher_guesses(teacher.spec, metrics[f"teacher_test_{figure}"], labels, module.task)
        if teacher.is_ensemble:
            metrics[f"teacher_member_test_{figure}"] = [test_figures(m, data, device)[f"test/{figure}"]
                                                        for m in teacher.member_classifiers()]
    if trainer.is_global_zero:
        rundir.write_metrics(run_dir, metrics)
        print_summary(stage, run_dir, metrics)
    return metrics
