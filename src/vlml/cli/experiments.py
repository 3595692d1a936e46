"""`vlml sweep` and `vlml table` (being written)."""

from typing import Any


def add_parsers(subparsers: Any) -> None:
    """Register the commands."""
