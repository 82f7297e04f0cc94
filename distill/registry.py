"""One small generic registry, used for architectures, datasets and distillation methods.

timm style: the key is the factory function's name, duplicates are an error, and an
unknown key fails listing the valid ones.
"""

from __future__ import annotations

import fnmatch
from typing import Generic, TypeVar

from distill.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of entries (usually factory functions).

    Args:
        kind: What the entries are, used in error messages (e.g. ``"model"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T, name: str | None = None) -> T:
        """Adds ``entry`` under ``name`` (default: its ``__name__``) and returns it unchanged.

        Usable as a decorator. Registering a name twice raises ``ValueError``.
        """
        key = name or getattr(entry, "__name__")
        if key in self._entries:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._entries[key] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Removes and returns the entry ``name`` (for code that registered it only for a while, e.g. a test)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """Returns the entry registered under ``name``.

        Raises:
            UsageError: ``name`` is unknown; the message lists the valid names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def import_path(self, name: str) -> str:
        """The import path of the entry registered as ``name``; a dotted path is returned as it is.

        Raises:
            UsageError: ``name`` is neither registered nor dotted; the message lists the valid names.
        """
        if "." in name:
            return name
        entry = self.get(name)
        return f"{entry.__module__}.{entry.__qualname__}"  # type: ignore[attr-defined]

    def name_of(self, obj: object) -> str | None:
        """The name under which ``obj``'s class is registered, or None if it is not."""
        return next((name for name, entry in self._entries.items() if type(obj) is entry), None)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

