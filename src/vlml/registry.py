"""Name -> record registries for what users choose by name (datasets, losses, encoders, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from vlml.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries with close-name suggestions on a miss.

    >>> r = Registry("dataset"); r.register("voc2007", 1); r.get("voc2007")
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove `name` and return its entry; `UnknownNameError` if it is not registered."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    @contextmanager
    def registered(self, name: str, entry: T) -> Iterator[T]:
        """Register `entry` as `name` for the duration of a `with` block (tests, plugins
        tried out in a session); it is removed on exit, also on an exception.

        >>> r = Registry("dataset")
        >>> with r.registered("tmp", 1):
        ...     "tmp" in r
        True
        >>> "tmp" in r
        False
        """
        self.register(name, entry)
        try:
            yield entry
        finally:
            self._entries.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self._entries, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid choices: {', '.join(self.names())}."

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
