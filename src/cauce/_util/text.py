"""Other libraries' error messages made into one readable line of cauce's own."""

from __future__ import annotations

import re

__all__ = ["one_line"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """``error``'s message on one line, without the context engines print after a blank line
    (DuckDB's and Spark's echo of the query), terminal escapes or unprintable characters (a
    binary file's bytes quoted by a parser), cut at ``limit`` characters."""
    text = _ANSI.sub("", str(error)).strip().split("\n\n", 1)[0]
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
