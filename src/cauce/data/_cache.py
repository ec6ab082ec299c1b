"""Decoded row groups kept in memory across epochs, when a rank's part fits a budget.

A training loop reads the same rows every epoch (in another order when shuffled). The first
epoch decodes them from Parquet as usual and keeps every row group it decodes, as NumPy
columns; later epochs (new :class:`~cauce.data.Shard` objects of the same split, columns and
coding) cut their batches out of memory, without touching storage: what ``tf.data``'s
``cache()`` and Ray Data's ``materialize()`` do. Whole row groups are kept, so a shuffled
epoch whose stretch ends elsewhere in a row group finds it too.

What a rank may come to hold is counted before its first read: its own row groups, or, when
shuffled (a rank's row groups change with the epoch), every row group of the split. Parts that
fit the budget, with what is held already, are kept; others stream from storage every epoch,
as they always did, and the log says so once. The cache lives as long as the process; it is
keyed by the split's identity (a prepared dataset's content hash, or plain files' sizes and
modification times), so a dataset prepared again is read again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from cauce._util.sizes import format_bytes
from cauce.data._convert import Batch
from cauce.data.api import DataError

log = logging.getLogger(__name__)

#: ``CAUCE_DATA_CACHE=0`` (or ``off``) turns the cache off whatever ``shard(cache=...)`` says.
ENV = "CAUCE_DATA_CACHE"
_OFF = ("0", "off", "false", "no")
_ON = ("", "1", "on", "true", "yes")

Key = tuple[object, ...]


def size(value: object, name: str) -> int:
    """A size argument of the reader (``4GiB``, bytes) in bytes; DataError if it is not one."""
    from cauce.errors import SpecError
    from cauce.spec import parse_memory

    try:
        return parse_memory(value, name)
    except SpecError as exc:
        raise DataError(str(exc)) from None


def budget(cache: bool | int | str, memory_budget: int) -> int:
    """Bytes the cache may hold for a reader: 0 when off, half the memory budget by default."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in _OFF:
        return 0
    if setting not in _ON:
        raise DataError(f"{ENV} must be 0/off to turn the cache off or 1/on, got {setting!r}")
    if cache is True:
        return memory_budget // 2
    if cache is False:
        return 0
    return size(cache, "cache")


@dataclass
class _Entry:
    row_bytes: int
    projected: int  # bytes the readers of this entry may come to hold
    groups: dict[int, list[Batch]] = field(default_factory=dict)


class GroupCache:
    """Decoded row groups by (split, columns, coding); thread-safe (prefetch threads fill it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Key, _Entry] = {}
        self._told: set[Key] = set()

    def row_bytes(self, key: Key) -> int | None:
        """The decoded bytes per row measured when ``key`` was first admitted, if it was."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.row_bytes if entry else None

    def admit(self, key: Key, *, projected: int, limit: int, row_bytes: int, where: str) -> bool:
        """Whether readers of ``key`` keep what they decode: ``projected`` more bytes fit."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.projected >= projected:
                return True
            held = sum(e.projected for k, e in self._entries.items() if k != key)
            if limit > 0 and held + projected <= limit:
                if entry is None:
                    self._entries[key] = _Entry(row_bytes, projected)
                else:
                    entry.projected = projected
                return True
            if limit > 0 and key not in self._told:
                self._told.add(key)
                log.info(
                    "%s: not kept in memory across epochs: it decodes to about %s, over the "
                    "cache's %s (%s held already); it is read from storage every epoch (raise "
                    "memory_budget or cache=... to keep it)",
                    where,
                    format_bytes(projected),
                    format_bytes(limit),
                    format_bytes(held),
                )
            return False

    def get(self, key: Key, group: int) -> list[Batch] | None:
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.groups.get(group)

    def has_all(self, key: Key, groups: set[int]) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and groups <= entry.groups.keys()

    def put(self, key: Key, group: int, parts: list[Batch]) -> None:
        for part in parts:  # never written to again: a batch handed out is a copy or a gather
            for array in part.values():
                array.flags.writeable = False
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.groups.setdefault(group, parts)

    def clear(self) -> None:
        """Drop everything (tests; a process that wants its memory back)."""
        with self._lock:
            self._entries.clear()
            self._told.clear()


CACHE = GroupCache()


def cut(parts: list[Batch], start: int, stop: int, *, copy: bool) -> Iterator[tuple[Batch, int]]:
    """Rows ``[start, stop)`` of a row group kept as ``parts``, as (columns, rows) chunks.

    ``copy``: chunks that the caller may hand out as they are (batches in stored order are
    views of their chunk) are copies, so that writing to a batch never changes the cache.
    """
    offset = 0
    for part in parts:
        rows = len(next(iter(part.values()))) if part else 0
        lo, hi = max(start, offset), min(stop, offset + rows)
        if lo < hi:
            chunk = {k: v[lo - offset : hi - offset] for k, v in part.items()}
            if copy:
                chunk = {k: np.array(v) for k, v in chunk.items()}
            yield chunk, hi - lo
        offset += rows
        if offset >= stop:
            return
