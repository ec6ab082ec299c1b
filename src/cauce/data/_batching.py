"""Cutting a stream of decoded chunks into batches: in stored order, or through a shuffle buffer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator

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

    The buffer is allocated once (per column, at the first chunk) and reused, so memory stays
    flat whatever the length of the epoch; each batch is one gather out of it (a copy the
    caller owns). Rows left over after a refill's whole batches stay for the next one.
    """
    capacity = max(capacity, size)
    buffer: Batch = {}
    filled = 0
    for chunk, rows in chunks:
        if not buffer:
            buffer = {k: np.empty(capacity, dtype=v.dtype) for k, v in chunk.items()}
        start = 0
        while start < rows:
            take = min(rows - start, capacity - filled)
            for name, column in chunk.items():
                buffer[name][filled : filled + take] = column[start : start + take]
            filled += take
            start += take
            if filled == capacity:
                order = rng.permutation(filled)
                full = filled - filled % size
                for begin in range(0, full, size):
                    yield _take(buffer, order[begin : begin + size])
                rest = order[full:]
                for array in buffer.values():
                    array[: len(rest)] = array[rest]
                filled = len(rest)
    if filled:
        order = rng.permutation(filled)
        stop = filled - filled % size if drop_last else filled
        for begin in range(0, stop, size):
            yield _take(buffer, order[begin : begin + size])


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return {k: v[start:stop] for k, v in batch.items()}


def _take(batch: Batch, index: np.ndarray) -> Batch:
    return {k: v[index] for k, v in batch.items()}


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
