"""The Optuna study behind a search: where it is stored, how it samples and prunes, how it resumes."""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path
from typing import Any

from distill.errors import UsageError

SAMPLERS = ("tpe", "gp", "grid", "random")
PRUNERS = ("none", "median", "hyperband")


def optuna() -> Any:
    """The optuna module, or a one-line error naming the extra that installs it."""
    try:
        import optuna as module
    except ModuleNotFoundError:
        raise UsageError('optuna is not installed; install the search extra: pip install -e ".[tune]"') from None
    module.logging.set_verbosity(module.logging.WARNING)
    return module


def storage_for(storage: str | None, out_dir: Path) -> Any:
    """A journal file (default ``OUT/study.journal``: several processes on one machine) or an RDB URL (many machines)."""
    op = optuna()
    if storage and "://" in storage:
        try:
            return op.storages.RDBStorage(storage, heartbeat_interval=60, grace_period=180,
                                          heartbeat_stale_trial_callback=op.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except Exception as err:  # sqlalchemy raises its own types for unreachable or unknown databases
            raise UsageError(f"--storage {storage}: cannot open the database ({str(err).splitlines()[0][:160]})") from None
    path = Path(storage) if storage else out_dir / "study.journal"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = op.storages.journal.JournalFileBackend(str(path))
    except OSError as err:
        raise UsageError(f"--storage {path}: cannot write the journal there ({err.strerror})") from None
    return op.storages.JournalStorage(backend)


def sampler_for(name: str, trials: int, seed: int, grid: dict[str, list[Any]] | None = None) -> Any:
    """The sampler: TPE with startup trials scaled to the budget, GP, grid (seeded alike in every worker), random."""
    op = optuna()
    if name == "tpe":
        # Optuna's default of 10 random startup trials would make a 10-trial budget a random search.
        return op.samplers.TPESampler(n_startup_trials=max(2, min(10, trials // 4)), seed=seed, multivariate=True)
    if name == "gp":
        try:
            importlib.import_module("scipy")
        except ModuleNotFoundError:
            raise UsageError('--sampler gp needs scipy: pip install -e ".[tune]"') from None
        return op.samplers.GPSampler(seed=seed, n_startup_trials=max(2, min(10, trials // 4)))
    if name == "grid":
        if not grid:
            raise UsageError("--sampler grid needs a `grid:` section in the space file")
        return op.samplers.GridSampler(grid, seed=seed)
    if name == "random":
        return op.samplers.RandomSampler(seed=seed)
    raise UsageError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")


def pruner_for(name: str) -> Any:
    op = optuna()
    if name == "none":
        return op.pruners.NopPruner()
    if name == "median":
        return op.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return op.pruners.HyperbandPruner()
    raise UsageError(f"unknown pruner {name!r}; valid: {', '.join(PRUNERS)}")


def open_study(name: str, storage: Any, sampler: Any, pruner: Any, identity: dict[str, str]) -> Any:
    """Creates the study, or joins the existing one when it searched the same stage and space.

    Raises:
        UsageError: the study of that name searched another stage or space.
    """
    op = optuna()
    study = op.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize",
                            load_if_exists=True)
    recorded = {k: study.user_attrs.get(k) for k in identity}
    if all(v is None for v in recorded.values()):
        for key, value in identity.items():
            study.set_user_attr(key, value)
    elif recorded != identity:
        changed = ", ".join(k for k in identity if recorded[k] != identity[k])
        raise UsageError(f"study {name!r} searched another {changed}; use --study NAME or another --out for this one")
    return study


def worker_id() -> str:
    """This process, as a trial records who runs it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(worker: str | None) -> bool:
    """Whether the worker ``host:pid`` is still running (a worker on another host is assumed alive)."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def recover_stale_trials(study: Any, storage: Any) -> list[dict[str, Any]]:
    """Marks failed the running trials whose worker died (killed with it) and queues their parameters again.

    Uses the storage's public interface (``get_trial_id_from_study_id_trial_number``,
    ``set_trial_state_values``), which every Optuna storage implements.

    Returns:
        The parameters queued again.
    """
    op = optuna()
    study_id = storage.get_study_id_from_name(study.study_name)
    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(op.trial.TrialState.RUNNING,)):
        if alive(trial.user_attrs.get("worker")):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "lost", True)  # it does not count toward the budget
        storage.set_trial_state_values(trial_id, op.trial.TrialState.FAIL)
        if trial.params and not trial.user_attrs.get("queued_again"):  # a stopped search queued it already
            attrs = {"rerun_of": trial.number, **({"baseline": True} if trial.user_attrs.get("baseline") else {})}
            study.enqueue_trial(trial.params, user_attrs=attrs)  # the recipe's baseline stays the baseline
            requeued.append(trial.params)
    return requeued
