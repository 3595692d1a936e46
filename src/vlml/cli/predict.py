"""`vlml predict` (being written)."""

from typing import Any


def add_parsers(subparsers: Any) -> None:
    """Register the command."""
