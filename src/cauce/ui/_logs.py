"""Task logs: the path comes from the store (the task's row), never from the URL. A page gets
the tail; the rest is read in bounded chunks (the tail that follows, or the whole file streamed
on demand), never loaded whole."""

from __future__ import annotations

import os
from collections.abc import Iterator

from cauce.history import HistoryStore, TaskRow

__all__ = ["CHUNK", "TAIL", "find_task", "read_from", "stream", "tail"]

TAIL = 16 * 1024  # bytes of a log shown in a page
CHUNK = 64 * 1024


def find_task(store: HistoryStore, job_id: str, task_id: str, attempt: int) -> TaskRow | None:
    for task in store.get_tasks(job_id):
        if task.task_id == task_id and task.attempt == attempt:
            return task
    return None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def tail(path: str, size: int = TAIL) -> tuple[str, int, bool]:
    """The last ``size`` bytes of the log (from a line start), its end offset, and whether
    something before was left out."""
    end = _size(path)
    if end < 0:
        return "", 0, False
    start = max(0, end - size)
    text, end = read_from(path, start, end - start)
    cut = start > 0
    if cut and "\n" in text:
        text = text.split("\n", 1)[1]
    return text, end, cut


def read_from(path: str, offset: int, limit: int = CHUNK) -> tuple[str, int]:
    """Up to ``limit`` bytes from ``offset``; the text and the offset after it."""
    offset = min(max(0, offset), 2**62)  # seek overflows beyond 2**63
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except (OSError, OverflowError):
        return "", offset
    return data.decode("utf-8", errors="replace"), offset + len(data)


def stream(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield block
