"""Operating-system errors made into the reason of a :class:`DataError` message."""

from __future__ import annotations

from cauce._util.text import one_line


def os_reason(exc: OSError) -> str:
    """Why an operating-system call failed, with the path it failed on when there is one."""
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or one_line(exc)
