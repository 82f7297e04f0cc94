"""Learning-rate range test (Smith 2017) through Lightning's tuner, with the plot saved as PNG."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.tuner import Tuner

from distill.errors import UsageError

PLOT = "lr_find.png"


def find_lr(trainer: Trainer, module: LightningModule, datamodule: LightningDataModule, run_dir: Path,
            num_training: int = 100, min_lr: float = 1e-6, max_lr: float = 1.0) -> float:
    """Trains ``num_training`` steps with an exponentially growing LR, restores the weights, saves
    the loss-vs-LR plot to ``run_dir/lr_find.png`` and returns the suggested LR (steepest descent)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    finder = Tuner(trainer).lr_find(module, datamodule=datamodule, num_training=num_training, min_lr=min_lr,
                                    max_lr=max_lr, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise UsageError("the LR range test found no suggestion (too few steps or a flat loss); "
                         "try more training batches")
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        figure = finder.plot(suggest=True)
        figure.axes[0].set_title(f"LR range test: suggested lr = {suggestion:.2e}")
        figure.savefig(run_dir / PLOT, dpi=120)
        plt.close(figure)
    return float(suggestion)
