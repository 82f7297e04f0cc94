"""End-to-end runs through the real entry point, and the one-line errors of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.train import main
from tests.conftest import FAST, fast, needs_fashion_mnist

pytestmark = needs_fashion_mnist


def logged_columns(run_dir: Path) -> set[str]:
    """The metric names of a run's CSV log."""
    return set((run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(","))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_help_lists_the_stages(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "student" in out


def test_teacher_then_student_through_the_cli(teacher_run, tmp_path):
    # The teacher stage (run by the fixture) leaves its full set of outputs.
    for name in ("best.ckpt", "last.ckpt", "config.yaml", "metrics.json"):
        assert (teacher_run / name).is_file(), name
    teacher = read_json(teacher_run / "metrics.json")
    assert {"test/acc", "test/f1", "params"} <= set(teacher)
    assert teacher["params"] == 1442 and teacher["model"] == "cnn_tiny" and 0.0 <= teacher["test/acc"] <= 1.0

    student_dir = tmp_path / "student"
    code = main(["student", "--model.model", "cnn_small", "--model.teacher_ckpt", str(teacher_run / "best.ckpt"),
                 "--model.method.temperature", "2", "--model.method.alpha", "0.5", "--run_dir", str(student_dir), *FAST])
    assert code == 0
    metrics = read_json(student_dir / "metrics.json")
    assert {"test/acc", "test/f1", "params"} <= set(metrics)
    assert metrics["params"] == 29178 and metrics["teacher_params"] == 1442
    assert metrics["method"] == "kd"
    assert metrics["method_settings"] == {"temperature": 2.0, "alpha": 0.5, "logit_standardize": False}
    # The teacher as it taught, measured on the whole test set (the trainer's test-batch limit is for the student).
    from distill.checkpoint import load_trained
    from distill.checkpoint import rebuild_data
    from distill.inference import test_outputs as test_logits

    trained = load_trained(teacher_run / "best.ckpt")
    assert trained.data_module == "images"  # the data's registry name, for distill.evaluate
    data = rebuild_data(trained, None, 1000)
    logits, labels = test_logits(trained.network, data, torch.device("cpu"))
    assert metrics["teacher_tta"] == "none"
    assert metrics["teacher_test_acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    ckpt = torch.load(student_dir / "best.ckpt", weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["model"] == "cnn_small" and ckpt["hyper_parameters"]["method"] == "kd"
    assert ckpt["hyper_parameters"]["method_settings"]["alpha"] == 0.5
    config = (student_dir / "config.yaml").read_text()
    assert "temperature: 2.0" in config and "alpha: 0.5" in config


def test_alpha_zero_trains_the_student_alone(teacher_run, tmp_path):
    code = main(["student", "--model.model", "cnn_tiny", "--model.teacher_ckpt", str(teacher_run / "best.ckpt"),
                 "--model.method.alpha", "0", "--run_dir", str(tmp_path / "alone"), *FAST])
    assert code == 0
    assert read_json(tmp_path / "alone" / "metrics.json")["method_settings"]["alpha"] == 0.0


def test_dkd_student_through_the_cli_records_its_method(teacher_run, tmp_path):
    code = main(["student", "--model.model", "cnn_tiny", "--model.teacher_ckpt", str(teacher_run / "best.ckpt"),
                 "--model.method", "dkd", "--model.method.beta", "2", "--model.method.logit_standardize", "true",
                 "--run_dir", str(tmp_path / "dkd"),
                 *fast(logger=None), "--trainer.log_every_n_steps", "1"])
    assert code == 0
    metrics = read_json(tmp_path / "dkd" / "metrics.json")
    # A method chosen by name starts from its own (paper) defaults, not the default recipe's KD values.
    assert metrics["method"] == "dkd"
    assert metrics["method_settings"] == {"temperature": 4.0, "alpha": 0.5, "beta": 2.0, "logit_standardize": True}
    assert {"train/loss_tckd", "train/loss_nckd", "train/loss_ce"} <= logged_columns(tmp_path / "dkd")


def test_max_steps_inside_the_first_epoch_still_leaves_best(tmp_path):
    args = fast(max_epochs=None)
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path), "--trainer.max_steps", "3",
                 *args])
    assert code == 0
    assert (tmp_path / "best.ckpt").is_file()
    assert read_json(tmp_path / "metrics.json")["steps"] == 3


def test_real_entry_point_in_a_fresh_directory(tmp_path):
    """`python -m distill.train teacher` then `student`, default run directories, as a user types them."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    common = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
              "--trainer.limit_test_batches", "1"]
    for stage, model in (("teacher", "cnn_tiny"), ("student", "cnn_tiny")):
        proc = subprocess.run([sys.executable, "-m", "distill.train", stage, "--model.model", model, *common],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (tmp_path / "checkpoints" / stage / "metrics.json").is_file()
    assert "teacher" in proc.stdout and "student" in proc.stdout  # the closing summary shows both


BAD_INPUTS = [
    (["teacher", "--model.model", "resnet9000"], "unknown model 'resnet9000'; valid:"),
    (["teacher", "--model.optimizer", "lion"], "unknown optimizer 'lion'; valid:"),
    (["teacher", "--model.scheduler", "zigzag"], "unknown scheduler 'zigzag'; valid:"),
    (["student", "--model.teacher_tta", "rotate"], "unknown test-time augmentation 'rotate'; valid: none, flip, flip_shift"),
    (["teacher", "--data.dataset", "mnist3d"], "unknown dataset 'mnist3d'; valid:"),
    (["teacher", "--data", "tables"], "unknown data module 'tables'; valid: images, tabular"),
    (["teacher", "--data", "tabular"], "tabular data needs --data.path FILE.csv or --data.dataset NAME"),
    (["teacher", "--data", "tabular", "--data.dataset", "penguins"],  # the default network reads images
     "--model.model cnn_wide cannot read this data's inputs of shape (10,)"),
    (["teacher", "--model.model", "mlp_small"], "these can: cnn_deep, cnn_medium"),
    (["student", "--data", "tabular", "--data.dataset", "penguins", "--data.augment_factor", "4"],
     "--data.augment_factor 4 has no effect with --data.augment none; it sets --data.augment munge or gaussian"),
    (["teacher", "--model.lr", "0"], "lr must be > 0"),
    (["teacher", "--data.batch_size", "0"], "batch sizes must be >= 1"),
    (["teacher", "--data.val_fraction", "1.5"], "val_fraction must be in [0, 1)"),
    (["student", "--model.method.temperature", "0"], "temperature must be > 0"),
    (["student", "--model.method.alpha", "1.5"], "alpha must be in [0, 1]"),
    (["student", "--model.method", "fitnets"], "unknown distillation method 'fitnets'; valid: at, crd, dist, dkd, fitnet, kd"),
    (["student", "--model.method.beta", "2"], "--model.method.beta: distill.losses.KD takes no option 'beta'"),
    (["student", "--model.method", "dkd", "--model.method.beta", "-1"], "beta must be >= 0"),
    (["student", "--model.method.logit_standardize", "maybe"], "logit_standardize"),
    (["student", "--model.teacher_ckpt", "nowhere/best.ckpt"], "checkpoint nowhere/best.ckpt not found"),
    (["teacher", "--trainer.max_epochs", "many"], "max_epochs"),
    (["teacher", "--trainer.max_epochs", "-3"], "max_epochs"),
    (["teacher", "--trainer.max_steps", "-5"], "max_steps"),
    (["teacher", "--trainer.precision", "17"], "17"),
    (["teacher", "--trainer.strategy", "warp_drive"], "warp_drive"),
    (["teacher", "--model.no_such_setting", "1"], "no_such_setting"),
    (["pupil"], "unknown stage 'pupil'; valid: teacher, student"),
    (["teacher", "--trainer.accelerator", "cpu", "--trainer.devices", "4096"], "this machine has"),
    (["teacher", "--data.root", "no/such/dir", "--data.download", "false", "--run_dir", "new"],
     "Fashion-MNIST not found in no/such/dir"),
    *([(["teacher", "--trainer.accelerator", "gpu"], "no CUDA GPU is available")] if not torch.cuda.is_available()
      else []),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "checkpoints" / "teacher"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text('{"test/acc": 0.9}')
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert message in err
    assert (earlier / "metrics.json").read_text() == '{"test/acc": 0.9}'  # nothing saved was touched


def test_a_config_file_with_an_unknown_key_is_one_line(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text("model:\n  model: cnn_tiny\n  learning_rate: 0.1\n")
    assert main(["teacher", "--config", str(config), "--run_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "learning_rate" in err


def test_a_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path, capsys):
    (tmp_path / "teacher.json").write_text('{"weights": [1, 2, 3]}')
    assert main(["student", "--model.teacher_ckpt", str(tmp_path / "teacher.json"), "--run_dir",
                 str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'teacher.json'} is not a checkpoint "
                                               "(not a file written by torch.save)")


def test_a_student_larger_than_its_teacher_is_warned_about(teacher_run, tmp_path):
    from distill.modules import DistillModule

    with pytest.warns(UserWarning, match=r"the student cnn_small \(29,178 parameters\) is larger than its teacher "
                                         r"\(1,442, 20.2x\)"):
        DistillModule(model="cnn_small", teacher_ckpt=str(teacher_run / "best.ckpt"))


def test_finished_run_is_not_overwritten_without_asking(teacher_run, tmp_path, capsys):
    run_dir = tmp_path / "again"
    args = ["teacher", "--model.model", "cnn_tiny", "--run_dir", str(run_dir), *FAST]
    assert main(args) == 0
    before = (run_dir / "metrics.json").read_bytes(), (run_dir / "best.ckpt").read_bytes()
    assert main(args) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert ((run_dir / "metrics.json").read_bytes(), (run_dir / "best.ckpt").read_bytes()) == before
    # a replacement that fails puts the finished run back as it was, its config.yaml too
    config = (run_dir / "config.yaml").read_bytes()
    assert main([*args, "--overwrite", "true", "--trainer.limit_train_batches", "0"]) == 2
    assert "took no optimizer step" in capsys.readouterr().err
    assert ((run_dir / "metrics.json").read_bytes(), (run_dir / "best.ckpt").read_bytes()) == before
    assert (run_dir / "config.yaml").read_bytes() == config and not list(run_dir.glob(".previous-*"))
    assert main([*args, "--overwrite", "true"]) == 0
    assert not (run_dir / "best-v1.ckpt").exists() and not list(run_dir.glob(".previous-*"))


def test_resume_from_last_continues_to_the_new_end(tmp_path):
    args = ["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path)]
    assert main([*args, *FAST]) == 0
    assert main([*args, "--ckpt_path", "last", *fast(max_epochs="2")]) == 0
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["epochs"] == 2 and metrics["steps"] == 8  # 4 batches per epoch, both epochs counted once
    assert metrics["cpu_threads"] == torch.get_num_threads()  # results move with it: every run records it


def test_resume_with_another_network_is_a_one_line_error(tmp_path, capsys):
    args = ["teacher", "--run_dir", str(tmp_path)]
    assert main([*args, "--model.model", "cnn_tiny", *FAST]) == 0
    before = (tmp_path / "last.ckpt").read_bytes()
    code = main([*args, "--model.model", "cnn_mini", "--ckpt_path", "last", *fast(max_epochs="2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: --ckpt_path {tmp_path / 'last.ckpt'} was saved by a cnn_tiny run, "
                                            "this run builds cnn_mini")
    assert (tmp_path / "last.ckpt").read_bytes() == before  # nothing saved is touched


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    code = main(["teacher", "--run_dir", str(tmp_path), "--ckpt_path", "last", *FAST])
    assert code == 2
    assert f"checkpoint {tmp_path / 'last.ckpt'} not found" in capsys.readouterr().err


def test_divergence_stops_with_step_and_terms_and_keeps_good_checkpoints(tmp_path, capsys):
    # 4 steps per epoch; at step 6 the learning rate jumps by 1e30, so epoch 0 ends well and epoch 1 diverges.
    code = main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path), "--model.optimizer", "sgd",
                 "--model.lr", "0.1", "--model.scheduler", "step", "--model.step_size", "6", "--model.gamma", "1e30",
                 *fast(max_epochs="3")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith("error: training diverged: non-finite loss at step") and "ce=" in err
    step = int(err.split("at step ")[1].split()[0])
    assert step >= 6
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["global_step"] == 4  # written at the end of epoch 0, before the divergence
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.json").exists()


def test_same_seed_and_config_give_identical_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        assert main(["teacher", "--model.model", "cnn_tiny", "--run_dir", str(tmp_path / name),
                     "--seed_everything", "7", *FAST]) == 0
        runs.append(read_json(tmp_path / name / "metrics.json"))
    for key in ("test/acc", "test/f1", "test/loss", "best_val_acc"):
        assert runs[0][key] == runs[1][key], key


def test_sigkill_at_random_moments_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path):
    """Real training processes killed with SIGKILL at random moments, resumed: the uninterrupted run's weights."""
    import random
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    # Dropout and random crops + flips draw from the global generators; the batch order from the seed and epoch.
    args = [sys.executable, "-m", "distill.train", "teacher", "--model.model", "cnn_tiny", "--model.model_kwargs",
            '{"dropout": 0.3}', "--data.augment", "true", "--trainer.max_epochs", "4",
            "--trainer.limit_train_batches", "30", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches",
            "2", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.logger", "false"]

    def final(run_dir: Path) -> tuple[dict, dict]:
        state = torch.load(run_dir / "last.ckpt", weights_only=True)["state_dict"]
        return state, read_json(run_dir / "metrics.json")

    reference = subprocess.run([*args, "--run_dir", "ref"], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected_state, expected_metrics = final(tmp_path / "ref")
    delays = random.Random(0)
    killed = 0
    for attempt in range(3):
        run_dir = tmp_path / f"killed{attempt}"
        proc = subprocess.Popen([*args, "--run_dir", str(run_dir)], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while not (run_dir / "last.ckpt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delays.uniform(0.0, 1.5))  # anywhere in the epochs after the first checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if (run_dir / "metrics.json").exists():
            continue  # it finished before the kill: nothing to resume
        killed += 1
        resumed = subprocess.run([*args, "--run_dir", str(run_dir), "--ckpt_path", "last"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        state, metrics = final(run_dir)
        assert state.keys() == expected_state.keys()
        assert all(torch.equal(state[k], expected_state[k]) for k in state), f"attempt {attempt}: weights differ"
        for key in ("test/acc", "test/loss", "steps", "epochs", "last_epoch/test/acc"):
            assert metrics[key] == expected_metrics[key], (attempt, key)
    assert killed >= 2, "the runs kept finishing before the kill"


def test_progress_bar_redraws_every_refresh_rate_steps(monkeypatch):
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import RichProgressBar

    from distill.cli import ProgressBar

    redrawn: list[int] = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end",
                        lambda self, trainer, module, outputs, batch, batch_idx: redrawn.append(batch_idx + 1))
    monkeypatch.setattr(ProgressBar, "total_train_batches", property(lambda self: 25))
    bar = ProgressBar(refresh_rate=10)
    for batch_idx in range(25):
        bar.on_train_batch_end(SimpleNamespace(), None, None, None, batch_idx)
    assert redrawn == [10, 20, 25]  # every 10th step and the epoch's last
