"""Both stages under Lightning's DDP on CPU (gloo, 2 processes), with exact final test metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.data import ImageDataModule
from distill.checkpoint import load_trained
from distill.inference import test_figures as model_test_metrics
from tests.conftest import needs_fashion_mnist

pytestmark = [needs_fashion_mnist, pytest.mark.slow]

DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
       "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
       "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
       "--data.batch_size", "32", "--data.eval_batch_size", "999"]  # 10000 = 10 x 999 + 10: an uneven split


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "distill.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_both_stages_under_ddp_write_exact_test_metrics(tmp_path):
    teacher = run(["teacher", "--model.model", "cnn_tiny", "--run_dir", "t", *DDP], tmp_path)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    # The student adds mixed precision and gradient clipping, which must work together under DDP.
    student = run(["student", "--model.model", "cnn_tiny", "--model.teacher_ckpt", "t/best.ckpt", "--run_dir", "s",
                   "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "1.0", *DDP], tmp_path)
    assert student.returncode == 0, student.stderr[-3000:]
    output = student.stdout + student.stderr
    assert "teacher: cached logits" in output
    assert "effective batch size 64 (32 per device x 2 device(s)" in output
    data = ImageDataModule(eval_batch_size=1000)
    for run_dir in ("t", "s"):
        written = json.loads((tmp_path / run_dir / "metrics.json").read_text())
        single = model_test_metrics(load_trained(tmp_path / run_dir / "best.ckpt").network, data, torch.device("cpu"))
        for key in ("test/acc", "test/f1", "test/loss"):
            assert written[key] == pytest.approx(single[key], abs=1e-6), (run_dir, key)
