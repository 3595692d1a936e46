"""Progress that reads well in a terminal, a log file and CI.

Modes (`configure(mode=...)`, the CLI's `--progress`, or the `VLML_PROGRESS` variable):
- `bar`: tqdm bars (carriage-return frames), for a terminal;
- `plain`: one plain line every `PLAIN_SECONDS` seconds or `PLAIN_PERCENT` percent, with the
  rate and ETA, never a carriage return: for a file or CI;
- `none`: nothing;
- `auto` (default): `bar` when stderr is a terminal, else `plain`.
A component's own switch (a config's `progress: false`) turns its bars off whatever the mode.

Summaries (`summary(text)`, e.g. one line per training epoch) are printed to stderr in every
mode unless `configure(quiet=True)` (the CLI's `--quiet`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

MODES = ("auto", "bar", "plain", "none")
PLAIN_SECONDS = 10.0
PLAIN_PERCENT = 10.0

_state = {"mode": os.environ.get("VLML_PROGRESS", "auto"), "quiet": False}


def configure(mode: str | None = None, quiet: bool | None = None) -> None:
    """Set the progress mode (one of `MODES`) and whether summaries are hidden."""
    if mode is not None:
        if mode not in MODES:
            from vlml.errors import ConfigError

            raise ConfigError(f"progress mode {mode!r}; expected one of {', '.join(MODES)}")
        _state["mode"] = mode
    if quiet is not None:
        _state["quiet"] = bool(quiet)


def mode() -> str:
    """The effective mode: `bar`, `plain` or `none` (`auto` resolved against stderr)."""
    m = _state["mode"] if _state["mode"] in MODES else "auto"
    if _state["quiet"]:
        return "none"
    if m == "auto":
        return "bar" if sys.stderr.isatty() else "plain"
    return m


def summary(text: str) -> None:
    """A line that belongs in every log (an epoch's numbers), unless quiet."""
    if not _state["quiet"]:
        print(text, file=sys.stderr, flush=True)


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60:02d}:{s % 60:02d}"


class PlainBar:
    """The part of tqdm's interface vlml uses, writing plain lines to stderr."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: float | None = None,
                 desc: str = "", unit: str = "it", initial: float = 0, **_: Any) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self._start_n = total, initial, initial
        self._t0 = self._last_t = time.monotonic()
        self._last_pct = -PLAIN_PERCENT
        self._printed = self._closed = False
        self.postfix = ""

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> PlainBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def _line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self._t0
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "")
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0 and not final:
            eta = f", ETA {_fmt_seconds((self.total - self.n) / rate)}"
        post = f", {self.postfix}" if self.postfix else ""
        end = " done" if final else ""
        return (f"{self.desc}: {done} {self.unit}{pct}, {rate:.1f} {self.unit}/s"
                f"{eta}{post}{end}")

    def update(self, n: float = 1) -> None:
        """Count `n` more; print a line when `PLAIN_SECONDS` passed since the last one, or at
        each `PLAIN_PERCENT` step once the loop has run that long (short loops stay silent)."""
        self.n += n
        now = time.monotonic()
        pct = 100 * self.n / self.total if self.total else 0.0
        long_enough = now - self._t0 >= PLAIN_SECONDS
        if now - self._last_t >= PLAIN_SECONDS or (
                long_enough and self.total and pct - self._last_pct >= PLAIN_PERCENT):
            print(self._line(), file=sys.stderr, flush=True)
            self._last_t, self._last_pct, self._printed = now, pct, True

    def close(self) -> None:
        """A final line, only when the loop printed any (a long loop says it is done)."""
        if self._printed and not self._closed:
            print(self._line(final=True), file=sys.stderr, flush=True)
        self._closed = True

    @staticmethod
    def write(text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A progress bar over `iterable` (or updated by hand, with `total=`): tqdm, a
    `PlainBar`, or a disabled tqdm, by the mode; `enabled=False` always disables it.
    kwargs: tqdm's (desc, unit, total, initial, leave)."""
    from tqdm.auto import tqdm

    m = mode() if enabled else "none"
    if m == "plain":
        return PlainBar(iterable, **kwargs)
    return tqdm(iterable, disable=m == "none", **kwargs)
