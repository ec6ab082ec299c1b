"""Other libraries' errors made into one readable line of a :class:`DataError` message."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """``error``'s message on one line, without the context engines print after a blank line
    (DuckDB's and Spark's echo of the query), terminal escapes or unprintable characters (a
    binary file's bytes quoted by a parser), cut at ``limit`` characters."""
    text = _ANSI.sub("", str(error)).strip().split("\n\n", 1)[0]
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def os_reason(exc: OSError) -> str:
    """Why an operating-system call failed, with the path it failed on when there is one."""
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or one_line(exc)
