"""Small Markdown helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def format_number(value: Any, digits: int = 3) -> str:
    """Numbers rounded to `digits` decimals, NaN and None as an en dash, text as it is (a
    class named "2007" stays "2007"), anything else as str."""
    if value is None:
        return "–"
    if isinstance(value, (bool, str, int)):
        return str(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if math.isnan(f) else f"{f:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table; numbers formatted with `format_number`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_number(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)
