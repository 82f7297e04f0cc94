"""Command line: ``python -m distill.train {teacher,student} [options]``.

Parses the stage's options (``distill.cli``), fits and tests it (``distill.stage``); bad input is a
one-line error and exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from jsonargparse import ArgumentError
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from distill.cli import STAGES, DistillCLI, bare_flag_values, usage
from distill.errors import DivergenceError, UsageError
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


def user_error(err: BaseException, building: bool) -> BaseException | None:
    """The error to show the user on one line, or None for a bug (whose traceback then shows).

    jsonargparse builds a method given on the command line and wraps the method's own complaint
    (``alpha must be in [0, 1]``) in a multi-line ValueError; the complaint is what the user needs.
    Lightning reports bad Trainer settings (negative epochs, an unknown precision or strategy) as
    MisconfigurationException or ValueError while the Trainer is built: input errors too.

    Args:
        err: What was raised.
        building: Whether it was raised while the command's objects were built from the input.
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (UsageError, DivergenceError, MisconfigurationException)):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, ArgumentError) or (building and isinstance(err, (ValueError, TypeError))):
        return err
    return None


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
    building = True
    try:
        cli = DistillCLI(stage, rest)  # parses the input and builds the data, the system and the Trainer
        building = False
        run_stage(cli)
    except (UsageError, ArgumentError, DivergenceError, MisconfigurationException, ValueError, TypeError) as err:
        shown = user_error(err, building)
        if shown is None or os.environ.get("DISTILL_DEBUG"):
            raise
        message = " ".join(str(shown).split())  # one line, whatever the source
        print(f"error: {message}", file=sys.stderr)
        return 2 if not isinstance(shown, DivergenceError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
