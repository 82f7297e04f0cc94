"""Command line: ``python -m distill.tune STAGE --space FILE``: a hyperparameter search of a training stage.

Every trial runs the real ``python -m distill.train STAGE`` in its own process and is scored by its
best validation accuracy. The study lives in Optuna storage (a journal file in ``--out`` by
default; a database URL to search from several machines) and resumes when the command is run again.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from pathlib import Path
from queue import Queue
from typing import Any

from rich.console import Console

from distill.errors import OneLineParser, UsageError, exit_code
from distill.run_dir import check_output_dir
from distill.tune import report
from distill.tune.space import Space, flags, probes, read_space, suggest
from distill.tune.study import (PRUNERS, SAMPLERS, open_study, optuna, pruner_for, recover_stale_trials, sampler_for,
                                storage_for, worker_id)
from distill.tune.trial import STOPPING, command, dry_parse, lookup, run, trial_env, trials_stop_with_the_search

STAGES = ("teacher", "student", "prune")
FIRST_FAILURES = 3  # the study stops when its first trials all fail: a configuration error, not bad luck


class SearchFailed(Exception):
    """The search could not go on (its first trials all failed): exit code 1."""


class TrialFailed(Exception):
    """A trial's training command failed (diverged, crashed): recorded as failed, the study goes on."""


def counted(study: Any) -> int:
    """Trials that count toward the budget: finished ones, except those lost with a killed worker."""
    states = {"COMPLETE", "PRUNED", "FAIL"}
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state.name in states and not t.user_attrs.get("lost"))


def devices() -> Queue[str | None]:
    """The GPUs trials are pinned to, one each (an empty pool on a CPU machine)."""
    pool: Queue[str | None] = Queue()
    try:
        import torch

        for index in range(torch.cuda.device_count()):
            pool.put(str(index))
    except ModuleNotFoundError:
        pass
    return pool


def search(stage: str, space: Space, out_dir: Path, trials: int, jobs: int, sampler_name: str, pruner_name: str,
           storage_arg: str | None, study_name: str, seed: int, console: Console) -> dict[str, Any]:
    """Runs (or continues) the study to ``trials`` trials and writes the report; returns the summary."""
    op = optuna()
    grid = sampler_name == "grid"
    if grid and not space.grid:
        raise UsageError("--sampler grid needs a `grid:` section in the space file")
    if not grid and not space.space:
        raise UsageError(f"--sampler {sampler_name} needs a `space:` section in the space file")
    for params in probes(space, grid):  # every key and every choice is checked before any trial
        dry_parse(stage, space, params)
    storage = storage_for(storage_arg, out_dir)
    study = open_study(study_name, storage, sampler_for(sampler_name, trials, seed, space.grid if grid else None),
                       pruner_for(pruner_name), {"stage": stage, "space": space.digest(), "sampler": sampler_name})
    requeued = recover_stale_trials(study, storage)
    if requeued:
        console.print(f"resuming: {len(requeued)} trial(s) lost with a killed worker are queued again")
    if not study.get_trials(deepcopy=False) and not grid:
        baseline = {key: lookup(base_config_of(stage, space), key) for key in space.space}
        baseline = {k: v for k, v in baseline.items() if v is not None}
        if baseline:  # the current recipe is trial 0: the search always includes it
            study.enqueue_trial(baseline, user_attrs={"baseline": True})
    pool = devices()
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)
    out_dir.mkdir(parents=True, exist_ok=True)

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", worker_id())
        params = suggest(trial, space, grid)
        run_dir = out_dir / "trials" / f"{trial.number:04d}"
        cmd = command(stage, space, params, run_dir, seed)
        trial.set_user_attr("command", shlex.join(cmd))
        device = pool.get() if not pool.empty() else None

        def should_stop(curve: list[float]) -> bool:
            trial.report(curve[-1], len(curve) - 1)
            return pruner_name != "none" and trial.should_prune()

        try:
            outcome = run(cmd, run_dir, trial_env(threads, device), should_stop)
        except BaseException:  # Ctrl-C or SIGTERM in this thread: run stopped the trial's processes
            queue_again(trial)
            raise
        finally:
            if device is not None:
                pool.put(device)
        if STOPPING.is_set():  # another thread took the signal; this trial was stopped with the search
            queue_again(trial)
            raise TrialFailed("stopped with the search; queued to run again when it resumes")
        trial.set_user_attr("seconds", round(outcome.seconds, 1))
        if outcome.pruned:
            raise op.TrialPruned()
        if outcome.metrics is None:
            raise TrialFailed(f"exit code {outcome.returncode}: {outcome.log_tail[:200]}")
        metrics = outcome.metrics
        figure = metrics.get("monitor", "val/acc").split("/", 1)[1]  # acc, or r2 for a regression target
        trial.set_user_attr("figure", figure)
        trial.set_user_attr(f"test_{figure}", metrics.get(f"test/{figure}"))
        trial.set_user_attr("epochs", metrics.get("epochs"))
        return float(metrics[f"best_val_{figure}"])

    lock = threading.Lock()

    def progress(study: Any, trial: Any) -> None:
        with lock:
            task = report.task_of_study(study)
            value = "-" if trial.value is None else task.shown(trial.value)
            best = study.best_trial if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) else None
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
            console.print(f"trial {trial.number:>3} {trial.state.name.lower():<8} val {task.headline_label} {value:>7}  "
                          f"{trial.user_attrs.get('seconds', 0):>6.1f} s  {params}"
                          + (f"  | best #{best.number} {task.shown(best.value)}" if best else ""))
            if all_failed(study, trials, since):
                study.stop()

    remaining = max(0, trials - counted(study))
    since = len(study.get_trials(deepcopy=False))  # this run's trials are numbered from here
    kwargs = {"catch": (TrialFailed,), "callbacks": [progress], "gc_after_trial": False}
    if remaining and jobs > 1 and stage != "teacher" and counted(study) == 0:
        # One trial first, alone: it builds the teacher's cached logits that the parallel ones then read.
        study.optimize(objective, n_trials=1, n_jobs=1, **kwargs)
        remaining -= 1
    if remaining and not all_failed(study, trials, since):
        study.optimize(objective, n_trials=remaining, n_jobs=jobs, **kwargs)
    if all_failed(study, trials, since):
        first = next(t for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number) if t.number >= since)
        raise SearchFailed(f"the first trials all failed; see {out_dir / 'trials'}/{first.number:04d}.log "
                           f"({first.user_attrs.get('command', '')[:120]})")
    return finish(stage, space, study, out_dir, sampler_name, storage_arg, seed, console)


def queue_again(trial: Any) -> None:
    """Queues an interrupted trial's parameters to run first when the search resumes (the baseline stays
    one); the interrupted trial itself is marked lost, so it does not count toward the budget."""
    trial.set_user_attr("lost", True)
    if trial.params:
        attrs = {"rerun_of": trial.number, **({"baseline": True} if trial.user_attrs.get("baseline") else {})}
        trial.study.enqueue_trial(trial.params, user_attrs=attrs)
        trial.set_user_attr("queued_again", True)


def base_config_of(stage: str, space: Space) -> dict[str, Any]:
    """The configuration trials start from, fixed overrides included (parsed by the stage itself)."""
    return dry_parse(stage, space, {})


def all_failed(study: Any, trials: int, since: int = 0) -> bool:
    """Whether the first trials this run started (numbers from ``since``) all failed: a configuration
    error, not bad luck. Failures of an earlier run do not stop a resumed one once the error is fixed."""
    first = sorted((t for t in study.get_trials(deepcopy=False) if t.number >= since), key=lambda t: t.number)
    first = first[:FIRST_FAILURES]
    return len(first) >= min(FIRST_FAILURES, trials) and all(t.state.name == "FAIL" for t in first)


def finish(stage: str, space: Space, study: Any, out_dir: Path, sampler: str, storage: str | None, seed: int,
           console: Console) -> dict[str, Any]:
    """The summary, ``best.yaml`` and the report files."""
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best = max(completed, key=lambda t: t.value) if completed else None
    baseline = next((t for t in completed if t.user_attrs.get("baseline")), None)
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    task = report.task_of_study(study)
    figure, name = task.headline, task.headline_label
    summary: dict[str, Any] = {
        "study": study.study_name, "stage": stage, "sampler": sampler, "seed": seed,
        "storage": storage or str(out_dir / "study.journal"), "trials": states,
        "objective": f"best validation {name} (best_val_{figure}); test {name} recorded only",
    }
    best_config = None
    if best is not None:
        summary["best"] = {"number": best.number, f"val_{figure}": best.value,
                           f"test_{figure}": best.user_attrs.get(f"test_{figure}"), "params": best.params}
        best_config = dry_parse(stage, space, best.params)
        best_config["run_dir"] = str(out_dir / "best")
    if baseline is not None:
        summary["baseline"] = {"number": baseline.number, f"val_{figure}": baseline.value,
                               f"test_{figure}": baseline.user_attrs.get(f"test_{figure}"), "params": baseline.params}
    written = report.write(out_dir, study, summary, best_config)
    if best is not None:
        console.print(f"best: trial {best.number}, val {name} {task.shown(best.value)} {best.params}"
                      + (f"; baseline (trial {baseline.number}) {task.shown(baseline.value)}" if baseline else ""))
    console.print(f"wrote {', '.join(p.name for p in written)} in {out_dir}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m distill.tune", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES, help="the training stage searched")
    parser.add_argument("--space", required=True, help="search space YAML (base_config, fixed, space, grid)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials in total, resumed ones included (default 12; grid: every point)")
    parser.add_argument("--jobs", type=int, default=1, help="trials run at once (threads split between them)")
    parser.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="tpe (Bayesian, default), gp, grid, random")
    parser.add_argument("--pruner", default="none", choices=PRUNERS,
                        help="stop poor trials early on their per-epoch val/acc (val/r2 for regression; off by default)")
    parser.add_argument("--storage", default=None,
                        help="journal file (default OUT/study.journal) or database URL shared by several machines")
    parser.add_argument("--study", default=None, help="study name (default: STAGE-SPACE_FILE_NAME)")
    parser.add_argument("--out", default=None, help="output directory (default checkpoints/tune/STUDY)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's training")
    parser.add_argument("--confirm_seeds", type=int, default=0,
                        help="print the commands that re-run the best and the baseline config over this many seeds")
    args = parser.parse_args(argv)

    def go() -> None:
        if args.jobs < 1 or (args.trials is not None and args.trials < 1):
            raise UsageError("--jobs and --trials must be >= 1")
        space = read_space(Path(args.space))
        name = args.study or f"{args.stage}-{Path(args.space).stem}"
        out_dir = Path(args.out or f"checkpoints/tune/{name}")
        check_output_dir(out_dir, "--out")
        points = 1
        for values in space.grid.values():
            points *= len(values)
        trials = args.trials or (points if args.sampler == "grid" else 12)
        with trials_stop_with_the_search():
            summary = search(args.stage, space, out_dir, trials, args.jobs, args.sampler, args.pruner, args.storage,
                             name, args.seed, Console(soft_wrap=True, highlight=False))
        if args.confirm_seeds and "best" in summary:
            # At the recipe's full budget: the base recipe with the best parameters, without the search's
            # fixed overrides (which shorten trials).
            seeds = f"python scripts/seeds.py --seeds {args.confirm_seeds} --first_seed {args.seed + 100} --jobs {args.jobs}"
            base = f" --student_config {space.base_config}" if space.base_config else ""
            best = shlex.join(flags(summary["best"]["params"]))
            print(f"confirm over fresh seeds at the full budget (the best of {trials} noisy trials is biased upward):\n"
                  f"  {seeds}{base} --student_args {shlex.quote(best)} --out {out_dir / 'confirm_best'}\n"
                  f"  {seeds}{base} --out {out_dir / 'confirm_baseline'}")

    try:
        return exit_code(go)
    except SearchFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
