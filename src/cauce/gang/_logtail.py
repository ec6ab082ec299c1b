"""Task logs as the driver writes and reads them: one header line per attempt, and the tail of
the last attempt (for root causes)."""

from __future__ import annotations

import os

__all__ = ["attempt_header", "log_tail"]

_TAIL_LINES = 20
_ATTEMPT_MARK = "=== cauce: attempt "


def attempt_header(attempt: int, job_id: str) -> str:
    """The line that starts attempt ``attempt`` (0-based) in each task's log."""
    return f"{_ATTEMPT_MARK}{attempt + 1} of job {job_id} ===\n"


def log_tail(path: str, lines: int = _TAIL_LINES) -> list[str]:
    """The last lines of the last attempt in a task's log, without blank lines around them
    (a log of blank lines has no tail: a root cause never shows a heading over nothing)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    chunk = text.rsplit(_ATTEMPT_MARK, 1)[-1]
    body = chunk.split("\n", 1)[1] if chunk is not text and "\n" in chunk else chunk
    tail = [line.rstrip() for line in body.splitlines()]
    while tail and not tail[-1]:
        tail.pop()
    tail = tail[-lines:]
    while tail and not tail[0]:
        tail.pop(0)
    return tail
