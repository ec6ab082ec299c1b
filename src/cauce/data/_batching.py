"""Cutting a stream of decoded chunks into batches: in stored order, or through a shuffle buffer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from cauce.data._convert import Batch

Chunks = Generator[tuple[Batch, int], None, None]  # (columns, rows)


def in_order(chunks: Chunks, size: int, *, drop_last: bool) -> Iterator[Batch]:
    """Batches of ``size`` rows; views of the chunks, except those that straddle two of them."""
    carry: list[Batch] = []
    carried = 0
    for chunk, rows in chunks:
        start = 0
        if carried:
            take = min(size - carried, rows)
            carry.append(_slice(chunk, 0, take))
            carried += take
            start = take
            if carried < size:
                continue
            yield _concat(carry)
            carry, carried = [], 0
        while rows - start >= size:
            yield _slice(chunk, start, start + size)
            start += size
        if start < rows:
            carry, carried = [_slice(chunk, start, rows)], rows - start
    if carried and not drop_last:
        yield _concat(carry)


def shuffled(
    chunks: Chunks, size: int, *, drop_last: bool, capacity: int, rng: np.random.Generator
) -> Iterator[Batch]:
    """Batches drawn at random from a buffer of ``capacity`` rows, refilled as it drains.

    The buffer is allocated once (at the first chunk) and reused, so memory stays flat whatever
    the length of the epoch; each batch is one gather out of it (a copy the caller owns). Rows
    left over after a refill's whole batches stay for the next one.
    """
    capacity = max(capacity, size)
    buffer: _Buffer | None = None
    filled = 0
    for chunk, rows in chunks:
        if buffer is None:
            buffer = _Buffer(chunk, capacity)
        start = 0
        while start < rows:
            take = min(rows - start, capacity - filled)
            buffer.put(chunk, start, take, filled)
            filled += take
            start += take
            if filled == capacity:
                order = rng.permutation(filled)
                full = filled - filled % size
                for begin in range(0, full, size):
                    yield buffer.take(order[begin : begin + size])
                rest = order[full:]
                buffer.keep(rest)
                filled = len(rest)
    if filled and buffer is not None:
        order = rng.permutation(filled)
        stop = filled - filled % size if drop_last else filled
        for begin in range(0, stop, size):
            yield buffer.take(order[begin : begin + size])


class _Buffer:
    """The shuffle buffer. Columns of one fixed-width dtype sit side by side in one row-major
    block, so that a batch's random rows are gathered whole (a row's values share a cache line)
    rather than column by column: several times faster for many narrow columns. Columns of
    Python objects are kept apart."""

    def __init__(self, chunk: Batch, capacity: int) -> None:
        self._names = list(chunk)
        by_dtype: dict[np.dtype[Any], list[str]] = {}
        self._loose: dict[str, np.ndarray] = {}
        for name, column in chunk.items():
            if column.dtype.hasobject or column.ndim != 1:
                self._loose[name] = np.empty((capacity, *column.shape[1:]), dtype=column.dtype)
            else:
                by_dtype.setdefault(column.dtype, []).append(name)
        self._blocks = [
            (names, np.empty((capacity, len(names)), dtype=dtype))
            for dtype, names in by_dtype.items()
        ]

    def put(self, chunk: Batch, start: int, take: int, at: int) -> None:
        """Rows ``[start, start + take)`` of ``chunk`` into rows ``[at, at + take)``."""
        for names, block in self._blocks:
            for j, name in enumerate(names):
                block[at : at + take, j] = chunk[name][start : start + take]
        for name, array in self._loose.items():
            array[at : at + take] = chunk[name][start : start + take]

    def take(self, index: np.ndarray) -> Batch:
        """The rows ``index``, as contiguous columns in the chunks' column order."""
        out: Batch = {}
        for names, block in self._blocks:
            rows = np.ascontiguousarray(np.take(block, index, axis=0).T)
            for j, name in enumerate(names):
                out[name] = rows[j]
        for name, array in self._loose.items():
            out[name] = array[index]
        return {name: out[name] for name in self._names}

    def keep(self, rest: np.ndarray) -> None:
        """Move the rows ``rest`` to the front, for the next refill."""
        for _, block in self._blocks:
            block[: len(rest)] = block[rest]
        for array in self._loose.values():
            array[: len(rest)] = array[rest]


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return {k: v[start:stop] for k, v in batch.items()}


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(source: Chunks, depth: int) -> Chunks:
    """``source`` run by a background thread, up to ``depth`` chunks ahead of the consumer.

    Arrow decodes without holding the GIL, so the next pieces are read while the caller works
    on the current batch. An error in the thread is raised in the caller; a caller that stops
    early (or is garbage-collected) stops the thread and waits for it.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failed(exc))
        finally:
            source.close()

    thread = threading.Thread(target=work, name="cauce-shard-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
