"""Colour on a terminal only: none when the stream is piped or redirected, when ``NO_COLOR`` is
set to anything non-empty (https://no-color.org), or when ``TERM`` is ``dumb``. The live views
(rich) follow the same rules: rich honours ``NO_COLOR`` and draws live only on a terminal."""

from __future__ import annotations

import os
from typing import IO

__all__ = ["paint", "use_colour"]

_CODES = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def use_colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, style: str, stream: IO[str]) -> str:
    """``text`` in ``style`` (red, green, yellow, bold, dim) when ``stream`` takes colour."""
    if not use_colour(stream):
        return text
    return f"\x1b[{_CODES[style]}m{text}\x1b[0m"
