"""The scripts run end to end (on a CPU, tiny settings)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, needs_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [needs_fashion_mnist, pytest.mark.slow]


def run_script(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_gpu_check_runs_both_stages_and_reports_throughput(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run_script([str(ROOT / "scripts" / "gpu_check.py"),
                       "--teacher_config", str(ROOT / "teachers/fashion_mnist/cnn_wide.yaml"),
                       "--student_config", str(ROOT / "teachers/fashion_mnist/cnn_wide-to-cnn_mini.yaml"),
                       "--steps", "5", "--warmup", "2", "--accelerator", "cpu", "--json", str(out),
                       "--extra", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["teacher"]["images_per_s"] > 0 and result["student"]["images_per_s"] > 0


def test_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script([str(ROOT / "scripts" / "benchmark.py"), "--steps", "3", "--warmup", "2", "--repeats", "1",
                       "--paired_steps", "3", "--student", "cnn_tiny", "--teacher", "cnn_tiny", "--json", str(out)],
                      tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("plain_steps_per_s", "stage_steps_per_s", "kd_cached_steps_per_s", "kd_online_steps_per_s",
                "stage_vs_plain", "kd_cached_vs_stage", "at_online_vs_kd_online", "dist_cached_vs_kd_cached",
                "two_cached_vs_kd_cached", "hooks_online_vs_kd_online", "paired_at_online_vs_kd_online",
                "paired_hooks_online_vs_kd_online", "paired_two_cached_vs_kd_cached"):
        assert result[key] > 0, key


def load_seeds_module():
    spec = importlib.util.spec_from_file_location("seeds", ROOT / "scripts" / "seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_metrics(seed, acc, last, model="cnn_small", params=100):
    return {"seed": seed, "test/acc": acc, "last_epoch/test/acc": last, "best_val_acc": acc, "model": model,
            "params": params, "epochs": 6, "train_seconds": 10.0, "checkpoint": f"/runs/{seed}/best.ckpt"}


def test_seeds_summary_measures_the_gain_against_the_better_student_alone():
    seeds = load_seeds_module()
    teacher = fake_metrics(0, 0.93, 0.92, model="cnn_wide", params=1000)
    kd = seeds.group("kd", "kd.yaml", [fake_metrics(0, 0.915, 0.91), fake_metrics(1, 0.925, 0.92)])
    twin = seeds.group("alpha0_twin", "kd.yaml + alpha 0", [fake_metrics(0, 0.90, 0.90), fake_metrics(1, 0.90, 0.90)])
    best = seeds.group("best_alone", "alone.yaml", [fake_metrics(0, 0.91, 0.90), fake_metrics(1, 0.91, 0.91)])
    summary = seeds.summarize(teacher, kd, twin, best, "cmd")
    assert kd["acc_mean"] == pytest.approx(92.0) and kd["acc_std"] == pytest.approx(0.707, abs=1e-3)
    assert summary["alone"]["name"] == "best_alone" and summary["alone_other"]["name"] == "alpha0_twin"
    assert summary["gain_mean"] == pytest.approx(1.0)  # 92.0 - 91.0, not 92.0 - 90.0
    assert summary["gain_vs_other_mean"] == pytest.approx(2.0)
    assert summary["gain_last_mean"] == pytest.approx(91.5 - 90.5)
    assert summary["teacher"]["acc"] == pytest.approx(93.0) and summary["student_teacher_params"] == 0.1
    table = seeds.markdown(summary)
    assert "+1.00 points" in table and "0: 91.50" in table and "1: 92.50" in table
    assert summary["teacher"]["model"] == "cnn_wide"
    # A student stage that averaged the teacher over test-time views reports the teacher as it taught.
    taught = [{**fake_metrics(s, 0.915, 0.91), "teacher_tta": "flip_shift", "teacher_test_acc": 0.9385} for s in (0, 1)]
    summary = seeds.summarize(teacher, seeds.group("kd", "kd.yaml", taught), twin, best, "cmd")
    assert summary["teacher"]["model"] == "cnn_wide + flip_shift TTA"
    assert summary["teacher"]["acc"] == pytest.approx(93.85) and summary["teacher"]["acc_stage"] == pytest.approx(93.0)
    assert "its own stage's test: 93.00" in seeds.markdown(summary)


def test_seeds_runner_trains_teacher_once_then_kd_twin_and_best_alone_per_seed(tmp_path):
    alone = tmp_path / "alone.yaml"
    alone.write_text("model:\n  model: cnn_tiny\n  lr: 0.01\n")
    out = tmp_path / "sweep"
    args = [str(ROOT / "scripts" / "seeds.py"), "--seeds", "2", "--out", str(out), "--alone_config", str(alone),
            "--jobs", "2", "--extra", *FAST, "--model.model", "cnn_tiny"]
    proc = run_script(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["seed"] for r in summary["kd"]["runs"]] == [0, 1]
    assert {summary["alone"]["name"], summary["alone_other"]["name"]} == {"alpha0_twin", "best_alone"}
    for kind in ("kd", "twin", "best"):
        for seed in (0, 1):
            metrics = json.loads((out / kind / f"seed{seed}" / "metrics.json").read_text())
            assert metrics["seed"] == seed and "last_epoch/test/acc" in metrics
            assert metrics["stage"] == ("teacher" if kind == "best" else "student")
            alpha = (metrics.get("method_settings") or {}).get("alpha")
            assert alpha == {"kd": 0.9, "twin": 0.0, "best": None}[kind]
    assert "lr: 0.01" in (out / "best" / "seed0" / "config.yaml").read_text()
    assert (out / "summary.md").read_text().count("|") > 20
    # Run again: every finished run is reused, nothing is trained or overwritten.
    before = (out / "kd" / "seed0" / "best.ckpt").stat().st_mtime_ns
    again = run_script(args, tmp_path)
    assert again.returncode == 0 and again.stdout.count("reusing") == 7
    assert (out / "kd" / "seed0" / "best.ckpt").stat().st_mtime_ns == before


@pytest.mark.parametrize("bad, message", [(["--seeds", "0"], "--seeds must be >= 1"),
                                          (["--student_config", "nope.yaml"], "no such file")])
def test_seeds_runner_refuses_bad_arguments(tmp_path, bad, message):
    proc = run_script([str(ROOT / "scripts" / "seeds.py"), "--out", str(tmp_path / "o"), *bad], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_the_twin_sets_every_teacher_weight_of_the_students_method_to_zero():
    seeds = load_seeds_module()
    recipes = ROOT / "teachers"
    assert seeds.twin_flags(seeds.method_of(recipes / "fashion_mnist" / "cnn_wide-to-cnn_mini.yaml", [])) == [
        "--model.method.alpha", "0"]
    assert seeds.twin_flags(seeds.method_of(recipes / "cifar100" / "vgg13-to-vgg8-crd.yaml", [])) == [
        "--model.method.beta", "0", "--model.method.alpha", "0"]
    assert seeds.twin_flags(seeds.method_of(None, ["--model.method", "kd", "--model.method=dist"])) == [
        "--model.method.beta", "0", "--model.method.gamma", "0"]


def test_the_twin_of_a_student_with_synthetic_rows_sees_none(tmp_path):
    seeds = load_seeds_module()
    assert seeds.synthetic_rows_flags(ROOT / "teachers" / "penguins" / "mlp_wide-to-mlp_small.yaml", []) == []
    assert seeds.synthetic_rows_flags(None, ["--data.augment=munge"]) == ["--data.augment", "none"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  init_args:\n    augment: munge\n")
    assert seeds.synthetic_rows_flags(recipe, []) == ["--data.augment", "none"]


def test_qad_seeds_sets_quantization_aware_files_beside_post_training_int8(teacher_run, student_run, tmp_path):
    pytest.importorskip("torchao")
    quick = "--trainer.max_epochs 1 --trainer.limit_train_batches 4 --trainer.limit_val_batches 2 " \
            "--trainer.logger false --model.calibration 32 --data.batch_size 32"
    proc = run_script([str(ROOT / "scripts" / "qad_seeds.py"), "--seeds", "2", "--student",
                       str(student_run / "best.ckpt"), "--teacher", str(teacher_run / "best.ckpt"),
                       "--out", str(tmp_path / "qad"), "--extra", quick, "--latency_runs", "3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "qad" / "summary.json").read_text())
    assert len(summary["qad_int8"]) == 2 and summary["ptq_int8"] > 0
    assert all(a >= 0.995 for a in summary["qad_agreement_with_network"])
    assert "QAD int8, seed 1" in (tmp_path / "qad" / "summary.md").read_text()
