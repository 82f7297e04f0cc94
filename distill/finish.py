"""After fit: the test figures of the best and the last checkpoint, ``metrics.json`` and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import Tensor, nn

from distill import run_dir as rundir
from distill.checkpoint import load_trained
from distill.data.interface import task_of
from distill.metrics import headline, test_figures
from distill.modules import ClassifierSystem
from distill.report import print_summary


@torch.no_grad()
def test_logits(model: nn.Module, data: Any, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """(N, K) logits and (N,) labels over the whole test set, every sample exactly once (``DistillData.test_batches``)."""
    model = model.eval().to(device)
    all_logits, all_labels = [], []
    for inputs, labels in data.test_batches():
        all_logits.append(model(inputs.to(device)).float().cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


def model_test_metrics(model: nn.Module, data: Any, device: Any) -> dict[str, float]:
    """The test figures of ``model`` over the whole test set, in one process (``metrics.test_figures``)."""
    logits, labels = test_logits(model, data, device)
    return test_figures(logits, labels, task_of(data))


def checkpoint_test_metrics(trainer: Trainer, module: ClassifierSystem, data: LightningDataModule,
                            checkpoint: str) -> dict[str, float]:
    """Test metrics of ``checkpoint`` (the module's current weights when empty), each test sample counted once."""
    if trainer.world_size > 1:
        # A distributed sampler pads the test set by repeating samples; the final metrics must count
        # each test sample once, so one process (the caller's rank 0) evaluates on the whole set.
        return model_test_metrics(load_trained(checkpoint).network, data, trainer.strategy.root_device)
    results = trainer.test(module, datamodule=data, ckpt_path=checkpoint or None, verbose=False, weights_only=True)
    return {k: float(v) for k, v in results[0].items()}


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
    if module.distills:
        teacher: Any = module
        # The teacher as it taught (its test-time views included), on the same test set; each of
        # several teachers too.
        device = trainer.strategy.root_device
        figure = headline(module.hparams.task)  # teacher_test_acc, or teacher_test_r2
        metrics[f"teacher_test_{figure}"] = model_test_metrics(teacher.teacher_as_classifier(), data, device)[f"test/{figure}"]
        members = teacher.teacher_members()
        if len(members) > 1:
            metrics[f"teacher_member_test_{figure}"] = [model_test_metrics(m, data, device)[f"test/{figure}"]
                                                        for m in members]
    if trainer.is_global_zero:
        rundir.write_metrics(run_dir, metrics)
        print_summary(stage, run_dir, metrics)
    return metrics
