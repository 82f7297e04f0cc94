"""Errors a user can fix: the CLI prints their message on one line and exits with code 2."""


class UsageError(ValueError):
    """Bad input from the user (a name, a value, a path); the message says what is wrong."""


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the loss terms."""
