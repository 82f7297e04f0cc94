"""Errors a user can fix: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn


class UsageError(ValueError):
    """Bad input from the user (a name, a value, a path); the message says what is wrong."""


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the loss terms."""


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit code 2, like every distill command."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def exit_code(command: Callable[[], object]) -> int:
    """Runs ``command``: 0, or 2 with the UsageError's message on one line (``DISTILL_DEBUG=1``: the traceback)."""
    try:
        command()
    except UsageError as err:
        if os.environ.get("DISTILL_DEBUG"):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0
