"""Does distillation pay off? The teacher once, then the student with KD and alone, over several seeds.

    python scripts/seeds.py --seeds 3 --out checkpoints/seeds_demo
    python scripts/seeds.py --seeds 3 --out checkpoints/seeds_full \\
        --teacher_config teachers/fashion_mnist/cnn_deep-full.yaml \\
        --student_config teachers/fashion_mnist/cnn_deep-full-to-cnn_mini.yaml \\
        --alone_config teachers/fashion_mnist/cnn_mini-alone-full.yaml

Trains (or reuses) the teacher, then for every seed three students through ``python -m distill.train``:
  kd     the student recipe (``--student_config``, or the bare defaults),
  twin   the same recipe with every teacher weight of its method at 0 (``--model.method.alpha 0`` for
         KD) and no synthetic rows (``--data.augment none``; they are the teacher's): identical but for the teacher,
  best   the student's own best recipe alone (``--alone_config``: a ``distill.train teacher`` config for the
         student's architecture, e.g. with label smoothing or augmentation), same budget.
The gain is KD against the better of the two students trained alone (by mean test accuracy), so a recipe
that only beats a handicapped baseline does not count. Every figure is the test accuracy of the
checkpoint with the best validation accuracy (``acc``) and of the last epoch (``acc_last``), in %; for a
regression target, test R² (``r2``, ``r2_last``).

Writes ``OUT/summary.json`` and ``OUT/summary.md``; every run keeps its own directory and log under OUT.
A finished run (its ``metrics.json`` exists) is reused, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from distill.losses import DISTILLERS
from distill.models.tta import label as tta_label
from distill.run_dir import atomic_write_text, read_metrics

ROOT = Path(__file__).resolve().parents[1]


class RunFailed(RuntimeError):
    """A training run exited with an error; the message names its log."""


def train_command(stage: str, config: Path | None, run_dir: Path, seed: int | None, extra: list[str]) -> list[str]:
    """The ``python -m distill.train`` command line of one run (``--overwrite``: only ever our own run_dir)."""
    cmd = [sys.executable, "-m", "distill.train", stage]
    if config is not None:
        cmd += ["--config", str(config)]
    if seed is not None:
        cmd += ["--seed_everything", str(seed)]
    return cmd + ["--run_dir", str(run_dir), "--overwrite", "true", "--trainer.enable_progress_bar", "false",
                  *extra]


def run(cmd: list[str], run_dir: Path, threads: int) -> dict[str, Any]:
    """Runs one stage unless ``run_dir`` already holds its metrics; returns its metrics.json."""
    finished = read_metrics(run_dir)
    if finished is not None:
        print(f"reusing {run_dir} (finished earlier)", flush=True)
        return finished
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir.with_name(run_dir.name + ".log")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    print(f"start  {run_dir}: {shlex.join(cmd[1:])}", flush=True)
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    metrics = read_metrics(run_dir)
    if code != 0 or metrics is None:
        raise RunFailed(f"{run_dir} failed (exit {code}); see {log}")
    print(f"done   {run_dir} in {time.perf_counter() - start:.0f} s", flush=True)
    return metrics


class Figure(NamedTuple):
    """The figure a sweep compares: test accuracy in % (classification) or test R² (regression)."""

    key: str  # summary.json keys: acc, acc_mean, ... or r2, r2_mean, ...
    scale: float
    digits: int
    label: str
    unit: str

    def of(self, metrics: dict[str, Any], key: str) -> float | None:
        value = metrics.get(key)
        return None if value is None else round(self.scale * float(value), self.digits)

    def text(self, value: float) -> str:
        return f"{value:.{self.digits}f}"


ACCURACY = Figure("acc", 100.0, 2, "test acc %", "points")
R2 = Figure("r2", 1.0, 4, "test R²", "R²")


def figure_of(metrics: dict[str, Any]) -> Figure:
    """R² for a regression run, else accuracy."""
    return R2 if metrics.get("task") == "regression" else ACCURACY


def group(name: str, recipe: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation and the per-seed figures of one kind of run."""
    fig = figure_of(runs[0])
    k = fig.key
    rows = [{"seed": m["seed"], k: fig.of(m, f"test/{k}"), f"{k}_last": fig.of(m, f"last_epoch/test/{k}"),
             f"best_val_{k}": fig.of(m, f"best_val_{k}"), "epochs": m.get("epochs"),
             "train_seconds": m.get("train_seconds"),
             "run_dir": str(Path(m["checkpoint"]).parent) if m.get("checkpoint") else None} for m in runs]
    out: dict[str, Any] = {"name": name, "recipe": recipe, "model": runs[0].get("model"), "params": runs[0].get("params")}
    if runs[0].get(f"teacher_test_{k}") is not None:  # distilled runs: the teacher as it taught (same in every run)
        out.update({"teacher_tta": runs[0].get("teacher_tta", "none"), f"teacher_{k}": fig.of(runs[0], f"teacher_test_{k}")})
    for key in (k, f"{k}_last", "train_seconds"):
        values = [r[key] for r in rows if r[key] is not None]
        out[f"{key}_mean"] = round(statistics.fmean(values), 3 if fig is ACCURACY else 4) if values else None
        out[f"{key}_std"] = round(statistics.stdev(values), 3 if fig is ACCURACY else 4) if len(values) > 1 else 0.0 if values else None
    out["runs"] = rows
    return out


def summarize(teacher: dict[str, Any], kd: dict[str, Any], twin: dict[str, Any], best: dict[str, Any] | None,
              command: str) -> dict[str, Any]:
    """summary.json: the gain of KD over the better of the students trained alone (by the mean test figure)."""
    fig = figure_of(teacher)
    k = fig.key
    alone_candidates = [g for g in (twin, best) if g is not None]
    alone = max(alone_candidates, key=lambda g: g[f"{k}_mean"])
    other = next((g for g in alone_candidates if g is not alone), None)

    def gain(key: str, against: dict[str, Any]) -> float | None:
        if kd[key] is None or against[key] is None:
            return None
        return round(kd[key] - against[key], 3 if fig is ACCURACY else 4)

    # The teacher as it taught: with the test-time augmentation the student stage used, if any; its own
    # stage's test figure (acc_stage) is of the classifier that stage validated.
    taught = {"model": tta_label(teacher.get("model"), kd.get("teacher_tta", teacher.get("tta", "none"))),
              k: kd.get(f"teacher_{k}", fig.of(teacher, f"test/{k}"))}
    described = ("test accuracy in %: acc = checkpoint with the best validation accuracy, acc_last = last epoch"
                 if fig is ACCURACY else "test R²: r2 = checkpoint with the best validation R², r2_last = last epoch")
    return {
        "figures": described,
        "command": command,
        "teacher": {**taught, "params": teacher.get("params"), f"{k}_stage": fig.of(teacher, f"test/{k}"),
                    f"{k}_last": fig.of(teacher, f"last_epoch/test/{k}"), "train_seconds": teacher.get("train_seconds"),
                    "checkpoint": teacher.get("checkpoint")},
        "kd": kd,
        "alone": alone,
        "alone_other": other,
        "gain_mean": gain(f"{k}_mean", alone),
        "gain_last_mean": gain(f"{k}_last_mean", alone),
        "gain_vs_other_mean": gain(f"{k}_mean", other) if other else None,
        "student_teacher_params": round(kd["params"] / teacher["params"], 4) if teacher.get("params") else None,
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table, one row per kind of run, every seed listed."""
    fig = R2 if "r2" in summary["teacher"] else ACCURACY
    k = fig.key

    def fmt(mean: float | None, std: float | None) -> str:
        return "-" if mean is None else f"{fig.text(mean)} ± {fig.text(std or 0.0)}"

    teacher = summary["teacher"]
    # Its own stage's figures describe the classifier that stage tested, which differs under a student-side TTA.
    same = teacher[f"{k}_stage"] == teacher[k]
    teacher_last = fig.text(teacher[f"{k}_last"]) if same and teacher[f"{k}_last"] is not None else "-"
    teacher_note = "-" if same else f"its own stage's test: {fig.text(teacher[f'{k}_stage'])}"
    lines = [
        f"Command: `{summary['command']}`", "",
        f"| run | model | params | {fig.label} (best epoch) | {fig.label} (last epoch) | per seed (best epoch) | train s |",
        "|---|---|---:|---:|---:|---|---:|",
        f"| teacher | {teacher['model']} | {teacher['params']:,} | {fig.text(teacher[k])} | {teacher_last} | "
        f"{teacher_note} | {teacher['train_seconds']} |",
    ]
    for label, g in (("KD student", summary["kd"]), (f"alone ({summary['alone']['name']}, the baseline)", summary["alone"]),
                     (f"alone ({summary['alone_other']['name']})" if summary["alone_other"] else "", summary["alone_other"])):
        if not g:
            continue
        seeds = ", ".join(f"{r['seed']}: {fig.text(r[k])}" for r in g["runs"])
        lines.append(f"| {label} | {g['model']} | {g['params']:,} | {fmt(g[f'{k}_mean'], g[f'{k}_std'])} | "
                     f"{fmt(g[f'{k}_last_mean'], g[f'{k}_last_std'])} | {seeds} | {g['train_seconds_mean']:.0f} |")
    gain, gain_last = summary["gain_mean"], summary["gain_last_mean"]
    sign = "+" if gain >= 0 else ""
    last = "-" if gain_last is None else f"{'+' if gain_last >= 0 else ''}{fig.text(gain_last)}"
    lines += ["", f"**Gain of KD over the better student alone: {sign}{fig.text(gain)} {fig.unit}** (best epoch; last "
              f"epoch: {last}), over {len(summary['kd']['runs'])} seeds. "
              f"Student/teacher parameters: {summary['student_teacher_params']}."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="Number of student seeds.")
    parser.add_argument("--first_seed", type=int, default=0, help="Seeds are first_seed, first_seed+1, ...")
    parser.add_argument("--out", type=Path, required=True, help="Directory for the runs and the summary.")
    parser.add_argument("--teacher_config", type=Path, help="Teacher recipe (default: the bare teacher defaults).")
    parser.add_argument("--teacher_ckpt", type=Path, help="Reuse this trained teacher instead of training one.")
    parser.add_argument("--student_config", type=Path, help="KD student recipe (default: the bare student defaults).")
    parser.add_argument("--alone_config", type=Path, help="The student's best recipe without a teacher.")
    parser.add_argument("--jobs", type=int, default=1, help="Student runs at once (CPU threads are split among them).")
    parser.add_argument("--student_args", default="",
                        help="Further arguments for the KD student and its alpha=0 twin only, e.g. '--model.method.temperature 2'.")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="Further arguments for every training run (the rest of the command line).")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, as a one-line message, or None."""
    if args.seeds < 1:
        return f"--seeds must be >= 1, got {args.seeds}"
    if args.jobs < 1:
        return f"--jobs must be >= 1, got {args.jobs}"
    for flag in ("teacher_config", "teacher_ckpt", "student_config", "alone_config"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            return f"--{flag} {path}: no such file"
    if args.teacher_ckpt is not None and read_metrics(args.teacher_ckpt.parent) is None:
        return f"--teacher_ckpt {args.teacher_ckpt}: no metrics.json beside it (a finished teacher run directory has one)"
    return None


def absolute(path: Path | None) -> Path | None:
    """Runs execute from the repository root: paths given relative to the caller's directory are resolved first."""
    return None if path is None else path.resolve()


def recipe_name(path: Path | None, default: str) -> str:
    """A recipe as the summary names it: relative to the repository when inside it."""
    if path is None:
        return default
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def method_of(student_config: Path | None, student_args: list[str]) -> str:
    """The registry name of the student's method: the last ``--model.method NAME`` given, else the recipe's, else kd."""
    for i in range(len(student_args) - 1, -1, -1):
        flag, _, joined = student_args[i].partition("=")
        if flag == "--model.method":
            return joined or (student_args[i + 1] if i + 1 < len(student_args) else "kd")
    recipe = yaml.safe_load(student_config.read_text()) if student_config is not None else None
    class_path = ((recipe or {}).get("model") or {}).get("method", {}) or {}
    class_path = class_path.get("class_path") if isinstance(class_path, dict) else None
    if not class_path:
        return "kd"
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    return next((n for n in DISTILLERS.names() if DISTILLERS.get(n) is cls), class_path)


def twin_flags(method: str) -> list[str]:
    """The flags that set every teacher weight of ``method`` to 0: the same recipe, the student alone."""
    weights = DISTILLERS.get(method).teacher_weights if method in DISTILLERS else ("alpha",)
    return [part for name in weights for part in (f"--model.method.{name}", "0")]


def synthetic_rows_flags(student_config: Path | None, student_args: list[str]) -> list[str]:
    """``--data.augment none`` when the student's recipe or arguments make synthetic rows (labelled by the teacher):
    its twin must not see them, or it would still learn from the teacher."""
    recipe = yaml.safe_load(student_config.read_text()) if student_config is not None else None
    data = ((recipe or {}).get("data") or {}).get("init_args") or {}
    given = any(a.split("=", 1)[0] == "--data.augment" for a in student_args)
    return ["--data.augment", "none"] if given or data.get("augment", "none") != "none" else []


def plan(args: argparse.Namespace, out: Path, teacher_ckpt: Path, student_config: Path | None,
         alone_config: Path | None) -> dict[str, list[tuple[list[str], Path]]]:
    """The (command, run directory) of every student run, by kind: kd, twin and (with an alone recipe) best."""
    with_teacher = ["--model.teacher", str(teacher_ckpt), *args.extra, *shlex.split(args.student_args)]
    given = [*args.extra, *shlex.split(args.student_args)]
    twin = twin_flags(method_of(student_config, given)) + synthetic_rows_flags(student_config, given)
    jobs: dict[str, list[tuple[list[str], Path]]] = {"kd": [], "twin": [], "best": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        kd_dir, twin_dir, best_dir = (out / kind / f"seed{seed}" for kind in ("kd", "twin", "best"))
        jobs["kd"].append((train_command("student", student_config, kd_dir, seed, with_teacher), kd_dir))
        jobs["twin"].append((train_command("student", student_config, twin_dir, seed,
                                           [*with_teacher, *twin]), twin_dir))
        if alone_config is not None:
            # The student on labels alone is a supervised stage of its own: no teacher involved at all.
            jobs["best"].append((train_command("teacher", alone_config, best_dir, seed, args.extra), best_dir))
    return jobs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    teacher_config, student_config, alone_config = map(absolute, (args.teacher_config, args.student_config,
                                                                  args.alone_config))
    cores = os.cpu_count() or 1
    command = shlex.join(["python", "scripts/seeds.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        if args.teacher_ckpt is not None:
            teacher_ckpt = args.teacher_ckpt.resolve()
            teacher = read_metrics(teacher_ckpt.parent)
            assert teacher is not None  # check_args made sure
        else:
            teacher = run(train_command("teacher", teacher_config, out / "teacher", None, args.extra), out / "teacher",
                          cores)
            teacher_ckpt = Path(teacher["checkpoint"])
        jobs = plan(args, out, teacher_ckpt, student_config, alone_config)
        threads = max(1, cores // args.jobs)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {kind: [pool.submit(run, cmd, run_dir, threads) for cmd, run_dir in runs]
                       for kind, runs in jobs.items()}
            results = {kind: [f.result() for f in fs] for kind, fs in futures.items()}
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    kd_recipe = " ".join([recipe_name(student_config, "bare student defaults"), args.student_args]).strip()
    kd = group("kd", kd_recipe, results["kd"])
    given = [*args.extra, *shlex.split(args.student_args)]
    twin_args = " ".join(twin_flags(method_of(student_config, given)) + synthetic_rows_flags(student_config, given))
    twin = group("alpha0_twin", f"{kd_recipe} {twin_args}", results["twin"])
    best = group("best_alone", recipe_name(alone_config, ""), results["best"]) if results["best"] else None
    summary = summarize(teacher, kd, twin, best, command)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", markdown(summary))
    print(markdown(summary))
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
