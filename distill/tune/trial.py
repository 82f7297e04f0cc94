"""One configuration, run as the real training command in its own process, and what it reports."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distill.errors import Stopped, UsageError
from distill.run_dir import read_metrics
from distill.tune.space import Space, flags

POLL_SECONDS = 1.0


def command(stage: str, space: Space, params: dict[str, Any], run_dir: Path, seed: int) -> list[str]:
    """``python -m distill.train STAGE [--config BASE] FIXED... PARAMS... --run_dir DIR --seed_everything S``."""
    cmd = [sys.executable, "-m", "distill.train", stage]
    if space.base_config is not None:
        cmd += ["--config", str(space.base_config)]
    cmd += flags(space.fixed) + flags(params)
    return cmd + ["--run_dir", str(run_dir), "--seed_everything", str(seed), "--overwrite", "true",
                  "--trainer.enable_progress_bar", "false"]


def dry_parse(stage: str, space: Space, params: dict[str, Any]) -> dict[str, Any]:
    """The full config the stage would run with ``params`` (its ``--print_config``), checking every key.

    Parsed in this process by the stage's own command line, which prints the config and stops
    before building anything.

    Raises:
        UsageError: the stage's one-line error for an unknown key or a bad value.
    """
    from distill.train import main as train_main

    args = command(stage, space, params, Path("checkpoints/tune-dry-run"), 0)[3:]  # without python -m distill.train
    args = [a for a in args if a not in ("--overwrite", "true")] + ["--print_config"]
    out, err = io.StringIO(), io.StringIO()
    code: Any = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train_main(args)
        except SystemExit as exit_:  # --print_config exits once printed
            code = exit_.code
    if code not in (0, None):
        last = (err.getvalue().strip().splitlines() or ["the stage refused the configuration"])[-1]
        raise UsageError(f"the search space does not parse for the {stage} stage: {last.removeprefix('error: ')}")
    config = yaml.safe_load(out.getvalue())
    try:  # values a constructor would refuse: checked here, not by a failed trial
        check_model(config.get("model") or {})
    except UsageError as err:
        raise UsageError(f"the search space does not parse for the {stage} stage: {err}") from None
    return config


def check_model(model: dict[str, Any]) -> None:
    """The checks a stage's constructors make on plain settings, without building a network, data or teacher:
    the training settings, and a registered method built from its settings."""
    from distill.losses import DISTILLERS
    from distill.modules.classifier import check_settings

    check_settings(**model)
    method = model.get("method")
    if isinstance(method, dict) and method.get("class_path"):
        package, _, class_name = method["class_path"].rpartition(".")
        name = next((n for n in DISTILLERS.names() if DISTILLERS.get(n).__name__ == class_name
                     and DISTILLERS.get(n).__module__.startswith(package)), None)  # distill.losses.KD or .kd.KD
        if name is not None:  # a registered method is cheap to build; another is checked when its trial runs
            try:
                DISTILLERS.get(name)(**(method.get("init_args") or {}))
            except TypeError as err:
                raise UsageError(f"method {name}: {err}") from None


def lookup(config: dict[str, Any], key: str) -> Any:
    """``config["model"]["lr"]`` for ``model.lr`` (through ``init_args`` of class-path entries); None if absent."""
    node: Any = config
    for part in key.split("."):
        if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class Outcome:
    """How a trial ended: its metrics (None when it failed), exit code, seconds, and whether it was pruned."""

    metrics: dict[str, Any] | None
    returncode: int
    seconds: float
    pruned: bool = False
    log_tail: str = ""


def epoch_validation(run_dir: Path) -> list[float]:
    """The monitored validation figure per finished epoch (``val/acc``, or ``val/r2`` for regression),
    from the run's CSV log while it trains."""
    path = run_dir / "logs" / "metrics.csv"
    if not path.is_file():
        return []
    values: dict[int, float] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                value = row.get("val/acc") or row.get("val/r2")
                if value and row.get("epoch"):
                    values[int(float(row["epoch"]))] = float(value)
    except (OSError, ValueError, csv.Error):  # a line being written: read again at the next poll
        return []
    return [values[e] for e in sorted(values)]


LIVE: set[int] = set()  # process groups of the trials running now, in any worker thread
STOPPING = threading.Event()  # the search was told to stop: running trials end and are queued again
PARENT = "DISTILL_PARENT_PID"  # a trial's stage stops itself if this process dies, even by SIGKILL


def stop_trials(signum: int, frame: object) -> None:
    """A signal handler: stops every running trial's processes, then ends the search where it stands."""
    STOPPING.set()
    for group in list(LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signal.Signals(signum).name)


@contextlib.contextmanager
def trials_stop_with_the_search() -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the running trials too (their processes are in sessions of their own)."""
    STOPPING.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, stop_trials) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(cmd: list[str], run_dir: Path, env: dict[str, str],
        should_stop: Callable[[list[float]], bool] | None = None) -> Outcome:
    """Runs ``cmd`` in its own process group; stops the group when ``should_stop`` says so (pruning)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**env, PARENT: str(os.getpid())},
                                start_new_session=True)
        LIVE.add(proc.pid)
        pruned, reported = False, 0
        try:
            while proc.poll() is None:
                time.sleep(POLL_SECONDS)
                if should_stop is not None:
                    curve = epoch_validation(run_dir)
                    if len(curve) > reported:
                        reported = len(curve)
                        if should_stop(curve):
                            pruned = True
                            os.killpg(proc.pid, signal.SIGTERM)
                            try:
                                proc.wait(timeout=30)
                            except subprocess.TimeoutExpired:
                                os.killpg(proc.pid, signal.SIGKILL)
                            break
        finally:
            if proc.poll() is None:  # the worker itself is stopping: take the trial's processes with it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            LIVE.discard(proc.pid)
    seconds = time.perf_counter() - start
    tail = (run_dir.parent / f"{run_dir.name}.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
    metrics = read_metrics(run_dir) if proc.returncode == 0 and not pruned else None
    return Outcome(metrics, proc.returncode if proc.returncode is not None else -1, seconds, pruned, tail[0])


def trial_env(threads: int, device: str | None) -> dict[str, str]:
    """The environment of a trial: its thread count and, on a GPU machine, its one visible device."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env
