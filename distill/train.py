"""Command line: ``python -m distill.train {teacher,student} [options]``.

Parses the stage's options (``distill.cli``), fits and tests it (``distill.stage``); bad input is a
one-line error and exit code 2.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

from distill.cli import STAGES, DistillCLI, bare_flag_values, usage
from distill.errors import exit_code
from distill.stage import run_stage


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips from the console; warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_console() -> None:
    """Silences the warnings that do not apply to how distill runs Lightning."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # The run directory is ours (config.yaml lands first); overwrites are guarded by prepare_run_dir.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # The frozen teacher is in eval mode on purpose (DistillModule.train keeps it there).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(_DropTips())


def stop_with_parent() -> None:
    """A stage started by ``distill.tune`` ends when the search's process dies, even by SIGKILL (Linux).

    The search names itself in ``DISTILL_PARENT_PID``; the kernel then sends this process SIGTERM when
    its parent exits, so a killed search leaves no trial training on as an orphan.
    """
    parent = os.environ.get("DISTILL_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for bad input, with a one-line message)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    stage, rest = argv[0], bare_flag_values(argv[1:])
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; valid: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    quiet_console()
    stop_with_parent()
    state = {"building": True}

    def run() -> None:
        cli = DistillCLI(stage, rest)  # parses the input and builds the data, the system and the Trainer
        state["building"] = False
        run_stage(cli)

    return exit_code(run, building=lambda: state["building"])


if __name__ == "__main__":
    sys.exit(main())
