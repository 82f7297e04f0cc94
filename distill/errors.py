"""Errors a user can fix: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
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


def shown_error(err: BaseException, building: bool = False) -> BaseException | None:
    """The error to show the user on one line, or None for a bug (whose traceback then shows).

    jsonargparse builds a method given on the command line and wraps the method's own complaint
    (``alpha must be in [0, 1]``) in a multi-line ValueError; the complaint is what the user needs.
    Lightning reports bad Trainer settings (negative epochs, an unknown precision or strategy) as
    MisconfigurationException or ValueError while the Trainer is built: input errors too.

    Args:
        err: What was raised.
        building: Whether it was raised while the command's objects were built from the input.
    """
    from jsonargparse import ArgumentError
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (UsageError, DivergenceError, MisconfigurationException)):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, ArgumentError) or (building and isinstance(err, (ValueError, TypeError))):
        return err
    return None


def one_line(message: str) -> str:
    """A message on one line, whatever the source; an error re-raised from a DataLoader worker (which
    carries the worker's traceback in its text) is shown as the worker's own last line."""
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]
        message = last.split(": ", 1)[1] if re.match(r"^[\w.]+: ", last) else last
    if "Union subtypes" in message:  # jsonargparse's dump of every type it tried, nested per key
        message = union_mismatch(message)
    return " ".join(message.split())


def union_mismatch(message: str) -> str:
    """jsonargparse's several-hundred-character "does not validate against any of the Union subtypes"
    as the flag, the value given and the types it may take (or the choices, for a fixed set).

    The innermost key is the one at fault: ``--data.batch_size abc`` is reported by jsonargparse as
    the data module's union failing on a nested value.
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    if not keys:
        return message
    innermost = message[message.rindex('Parser key "'):]
    refused = re.search(r"given class_path '([\w.]+)':\s*Option '([^']+)' is not accepted", innermost)
    if refused:  # a setting the chosen class does not have (--model.method.beta with kd)
        return f"--{'.'.join(keys)}.{refused.group(2)}: {refused.group(1)} takes no option {refused.group(2)!r}"
    subtypes = re.search(r"Subtypes: \[(.*?)\]\n", innermost)
    expected = re.search(r"Expected a (.+?)\. Got value: (.*)", innermost)
    given = re.search(r"Given value: (.*?)(?: - |$)", message, flags=re.S)
    if subtypes is not None and given is not None:
        types, value = _types(subtypes.group(1)), given.group(1).strip()
    elif expected is not None:
        types, value = _types(expected.group(1)), expected.group(2).strip()
    else:
        return message
    nested = re.fullmatch(r"NestedArg\(key='[^']*', val=(.*)\)", value)
    if nested:
        value = nested.group(1).strip("'\"")
    choices = [c for t in types if t.startswith("Literal[") for c in re.findall(r"'([^']*)'", t)]
    if choices:
        return f"--{'.'.join(keys)}: {value!r}; valid: {', '.join(choices)}"
    return f"--{'.'.join(keys)}: {value!r} is not of type {' or '.join(types)}"


def _types(listed: str) -> list[str]:
    """``<class 'int'>, typing.Literal['a', 'b'], <class 'NoneType'>`` -> ``int``, ``Literal['a', 'b']``, ``null``."""
    found = re.findall(r"typing\.Literal\[[^\]]*\]|<class '[^']*'>|[\w.]+(?:\[[^\]]*\])?", listed)
    return [re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", t).replace("typing.", "").replace("NoneType", "null")
            for t in found]


class Stopped(BaseException):
    """The process was asked to stop (SIGTERM): raised where it runs, so ``finally`` blocks clean up."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def exit_code(command: Callable[[], object], building: Callable[[], bool] = lambda: False) -> int:
    """Runs a command's body: every distill command's one error-and-exit path.

    Returns 0; 2 with the user's error on one line (``DISTILL_DEBUG=1``: the traceback); 1 for a
    training run that diverged; 130 for Ctrl-C and 143 for SIGTERM, said in one line after the
    command's own clean-up ran (temporary files removed; what was saved stays). Anything else is a
    bug and raises.

    Args:
        command: The command's work.
        building: Whether the command is still building its objects from the input (then a
            ValueError or TypeError is the input's fault).
    """
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:
        command()
    except (KeyboardInterrupt, Stopped) as err:
        if os.environ.get("DISTILL_DEBUG"):
            raise
        name = "Ctrl-C" if isinstance(err, KeyboardInterrupt) else str(err)
        print(f"error: stopped by {name}; files already written are complete, nothing was half-written",
              file=sys.stderr)
        return 130 if isinstance(err, KeyboardInterrupt) else 143
    except Exception as err:
        shown = shown_error(err, building())
        if shown is None or os.environ.get("DISTILL_DEBUG"):
            raise
        print(f"error: {one_line(str(shown))}", file=sys.stderr)
        return 1 if isinstance(shown, DivergenceError) else 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
