"""Adaptive dynamic batching: one model run for the requests that are waiting when it is free.

A request that finds the model idle and nothing else on its way runs at once, alone: a lone
client never waits for a batch window. While the model runs, requests queue; when it is free
again, the batcher takes every queued request (up to ``max_batch_size`` rows) into one run. It
waits, at most ``max_delay`` seconds, only when the batch is not full and more requests are
known to be in flight: the server has started reading them but not yet queued them
(:meth:`Batcher.expect` / :meth:`Batcher.submit`).

Contract: every method is called from the event loop's thread; the model function runs in one
dedicated thread (torch releases the GIL while it computes, so the loop keeps reading requests).
A failed run is retried request by request, so that one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from cauce.serve.api import InvalidInput, QueueFull

__all__ = ["BatchObserver", "Batcher"]

log = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[Any]]
T = TypeVar("T")


class BatchObserver(Protocol):
    def batch(self, rows: int, requests: int, seconds: float) -> None: ...
    def depth(self, requests: int) -> None: ...


@dataclass
class _Item:
    inputs: Arrays
    rows: int
    key: tuple[tuple[int, ...], ...]  # the non-batch shape of each input: runs only join alike
    future: asyncio.Future[Arrays]
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Groups concurrent requests into runs of ``run(inputs) -> outputs`` (all arrays by name,
    rows along the first dimension)."""

    def __init__(
        self,
        run: Callable[[Arrays], Arrays],
        *,
        max_batch_size: int,
        max_delay: float,
        max_queue: int,
        observer: BatchObserver | None = None,
    ) -> None:
        self._run_fn = run
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue = max_queue
        self._observer = observer
        self._queue: collections.deque[_Item] = collections.deque()
        self._incoming = 0
        self._changed = asyncio.Event()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cauce-model")

    @property
    def depth(self) -> int:
        """Requests queued, not yet running."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy and self._incoming == 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="cauce-batcher")

    def expect(self) -> None:
        """A request is on its way (its body is being read or decoded)."""
        self._incoming += 1

    def forget(self) -> None:
        """An expected request will not come (it was invalid)."""
        self._incoming -= 1
        self._changed.set()

    async def submit(self, inputs: Arrays, rows: int, *, expected: bool = True) -> Arrays:
        """Queue checked inputs and wait for their outputs; raises QueueFull when full."""
        if expected:
            self._incoming -= 1
        if len(self._queue) >= self.max_queue:
            self._changed.set()
            raise QueueFull(len(self._queue))
        key = tuple(a.shape[1:] for a in inputs.values())
        future: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(inputs, rows, key, future))
        self._report_depth()
        self._changed.set()
        return await future

    async def on_model_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the model's thread, outside of any batch (loading, warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued, running or expected, and the last batch's requests
        have taken their results; False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while not self.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # The last batch's results wake their requests at the loop's next turn; this wakes up
        # after them. Without it, a stop right after could cancel requests that were answered.
        await asyncio.sleep(0)
        return self.idle

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(QueueFull(0))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.depth(len(self._queue))

    def _take(self, batch: list[_Item], rows: int) -> int:
        """Move queued items that fit (same shapes, row budget) into ``batch``."""
        while self._queue:
            item = self._queue[0]
            if batch and (item.key != batch[0].key or rows + item.rows > self.max_batch_size):
                break
            self._queue.popleft()
            batch.append(item)
            rows += item.rows
            if rows >= self.max_batch_size:
                break
        return rows

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._changed.clear()
                await self._changed.wait()
                continue
            batch: list[_Item] = []
            rows = self._take(batch, 0)
            if self.max_delay > 0 and rows < self.max_batch_size and self._incoming > 0:
                deadline = loop.time() + self.max_delay
                while rows < self.max_batch_size and self._incoming > 0:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except TimeoutError:
                        break
                    before = rows
                    rows = self._take(batch, rows)
                    if rows == before and self._queue:
                        break  # what is queued cannot join this batch
            self._report_depth()
            self._busy = True
            try:
                await self._execute(batch, rows)
            except Exception as exc:  # a bug here must not stop batching for everyone
                log.exception("batch of %d requests failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                self._busy = False

    async def _execute(self, batch: list[_Item], rows: int) -> None:
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {k: np.concatenate([it.inputs[k] for it in batch]) for k in batch[0].inputs}
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_fn, inputs)
        except Exception as exc:
            if len(batch) > 1:  # find the request that the model cannot run; others go on
                for item in batch:
                    await self._execute([item], item.rows)
                return
            log.info("model run failed on a request: %s", exc)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            if not batch[0].future.done():
                batch[0].future.set_exception(
                    InvalidInput(f"the model cannot run on this input: {first}", status=422)
                )
            return
        if self._observer is not None:
            self._observer.batch(rows, len(batch), time.perf_counter() - started)
        start = 0
        for item in batch:
            end = start + item.rows
            if not item.future.done():
                item.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end
