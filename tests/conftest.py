"""Shared fixtures: a tiny teacher trained once through the real CLI, and small fake datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.data.sources import DEBIAN_FASHION_MNIST
from distill.train import main

# Flags that keep a CLI run to a few seconds on a CPU: a few batches, quiet output.
FAST = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "4",
    "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.logger", "false",
    "--data.batch_size", "32",
    "--data.eval_batch_size", "256",
]



def fast(**overrides: str | None) -> list[str]:
    """FAST with some flags changed (``max_epochs="3"``) or dropped (``logger=None``); keys are trainer
    or data flag names without their prefix."""
    args = list(FAST)
    for key, value in overrides.items():
        flag = next(f for f in args if f.endswith("." + key))
        i = args.index(flag)
        if value is None:
            del args[i : i + 2]
        else:
            args[i + 1] = value
    return args


needs_fashion_mnist = pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of a tiny teacher trained for a few steps on Fashion-MNIST."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    run_dir = tmp_path_factory.mktemp("teacher")
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(run_dir), *FAST])
    assert code == 0
    return run_dir


@pytest.fixture(scope="session")
def student_run(teacher_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of a tiny student distilled from ``teacher_run`` (with CSV logs)."""
    run_dir = tmp_path_factory.mktemp("student")
    code = main(["student", "--model.model", "cnn_small", "--model.teacher_ckpt", str(teacher_run / "best.ckpt"),
                 "--run_dir", str(run_dir), *fast(logger=None)])
    assert code == 0
    return run_dir
