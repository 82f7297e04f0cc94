"""The scripts run end to end (on a CPU, tiny settings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [needs_fashion_mnist, pytest.mark.slow]


def run_script(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_gpu_check_runs_both_stages_and_reports_throughput(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run_script([str(ROOT / "scripts" / "gpu_check.py"),
                       "--teacher_config", str(ROOT / "teachers/fashion_mnist/cnn_wide.yaml"),
                       "--student_config", str(ROOT / "teachers/fashion_mnist/cnn_wide-to-cnn_small.yaml"),
                       "--steps", "5", "--warmup", "2", "--accelerator", "cpu", "--json", str(out),
                       "--extra", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["teacher"]["images_per_s"] > 0 and result["student"]["images_per_s"] > 0


def test_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script([str(ROOT / "scripts" / "benchmark.py"), "--steps", "3", "--warmup", "2", "--repeats", "1",
                       "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("plain_steps_per_s", "stage_steps_per_s", "kd_cached_steps_per_s", "kd_online_steps_per_s",
                "stage_vs_plain", "kd_cached_vs_stage"):
        assert result[key] > 0, key
