"""The adaptive batcher, driven by asyncio with a fake model (no torch, no HTTP)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from cauce.serve._batcher import Batcher
from cauce.serve.api import InvalidInput, QueueFull

Arrays = dict[str, np.ndarray[Any, Any]]


class FakeModel:
    """Doubles ``x``; records each batch's size; sleeps ``delay`` per run; fails on x < 0."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.gate: threading.Event | None = None

    def __call__(self, inputs: Arrays) -> Arrays:
        if self.gate is not None:
            self.gate.wait(60)  # set by the test within a moment; 60 s for a busy host
        x = inputs["x"]
        self.batches.append(x.shape[0])
        if (x < 0).any():
            raise RuntimeError("index out of range in self")
        time.sleep(self.delay)
        return {"y": x * 2}


def _x(*values: float) -> Arrays:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())  # type: ignore[arg-type]


def test_a_lone_request_does_not_wait_for_a_window() -> None:
    model = FakeModel()

    async def main() -> float:
        b = Batcher(model, max_batch_size=64, max_delay=60.0, max_queue=10)
        b.start()
        started = time.perf_counter()
        out = await b.submit(_x(3), 1, expected=False)
        took = time.perf_counter() - started
        assert out["y"].tolist() == [[6.0]]
        await b.stop()
        return took

    assert run(main) < 20  # far below the 60 s max_delay, even on a busy host
    assert model.batches == [1]


def test_requests_queued_while_the_model_runs_form_one_batch() -> None:
    model = FakeModel()
    model.gate = threading.Event()

    async def main() -> list[Any]:
        b = Batcher(model, max_batch_size=64, max_delay=0.0, max_queue=100)
        b.start()
        first = asyncio.ensure_future(b.submit(_x(0), 1, expected=False))
        await asyncio.sleep(0.05)  # the first runs (blocked on the gate); the next ones queue
        rest = [asyncio.ensure_future(b.submit(_x(i), 1, expected=False)) for i in range(1, 11)]
        await asyncio.sleep(0.05)
        assert b.depth == 10
        model.gate.set()  # type: ignore[union-attr]
        results = await asyncio.gather(first, *rest)
        await b.stop()
        return results

    results = run(main)
    assert model.batches == [1, 10]
    assert [r["y"][0, 0] for r in results] == [2.0 * i for i in range(11)]


def test_max_batch_size_counts_rows() -> None:
    model = FakeModel()
    model.gate = threading.Event()

    async def main() -> None:
        b = Batcher(model, max_batch_size=4, max_delay=0.0, max_queue=100)
        b.start()
        first = asyncio.ensure_future(b.submit(_x(0), 1, expected=False))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(b.submit(_x(1, 1, 1), 3, expected=False)) for _ in range(3)]
        await asyncio.sleep(0.05)
        model.gate.set()  # type: ignore[union-attr]
        await asyncio.gather(first, *rest)
        await b.stop()

    run(main)
    assert model.batches == [1, 3, 3, 3]


def test_waits_only_for_requests_known_to_be_coming() -> None:
    model = FakeModel()

    async def main() -> None:
        b = Batcher(model, max_batch_size=8, max_delay=60.0, max_queue=100)
        b.start()
        b.expect()
        b.expect()  # two requests are being read

        async def late(delay: float, value: float) -> Arrays:
            await asyncio.sleep(delay)
            return await b.submit(_x(value), 1)

        started = time.perf_counter()
        await asyncio.gather(late(0.0, 1), late(0.05, 2))
        assert time.perf_counter() - started < 20  # it ran when the second came, not at 60 s
        # One more is announced and then dropped (a bad request): no wait for it.
        b.expect()
        b.forget()
        started = time.perf_counter()
        await b.submit(_x(3), 1, expected=False)
        assert time.perf_counter() - started < 20
        await b.stop()

    run(main)
    assert model.batches == [2, 1]


def test_a_failing_request_fails_alone() -> None:
    model = FakeModel()
    model.gate = threading.Event()

    async def main() -> list[Any]:
        b = Batcher(model, max_batch_size=64, max_delay=0.0, max_queue=100)
        b.start()
        first = asyncio.ensure_future(b.submit(_x(0), 1, expected=False))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(b.submit(_x(v), 1, expected=False)) for v in (1, -1, 2)]
        await asyncio.sleep(0.05)
        model.gate.set()  # type: ignore[union-attr]
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await b.stop()
        return results

    results = run(main)
    assert results[1]["y"][0, 0] == 2.0 and results[3]["y"][0, 0] == 4.0
    assert isinstance(results[2], InvalidInput) and results[2].status == 422
    assert "index out of range" in str(results[2])
    assert model.batches == [1, 3, 1, 1, 1]  # the batch of 3 failed and was re-run one by one


def test_a_full_queue_refuses() -> None:
    model = FakeModel()
    model.gate = threading.Event()

    async def main() -> None:
        b = Batcher(model, max_batch_size=1, max_delay=0.0, max_queue=2)
        b.start()
        running = asyncio.ensure_future(b.submit(_x(0), 1, expected=False))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit(_x(1), 1, expected=False)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="2 requests queued") as info:
            await b.submit(_x(2), 1, expected=False)
        assert info.value.retry_after >= 1
        model.gate.set()  # type: ignore[union-attr]
        await asyncio.gather(running, *queued)
        await b.stop()

    run(main)


def test_inputs_of_other_shapes_run_apart() -> None:
    model = FakeModel()
    model.gate = threading.Event()

    async def main() -> None:
        b = Batcher(model, max_batch_size=64, max_delay=0.0, max_queue=100)
        b.start()
        first = asyncio.ensure_future(b.submit(_x(0), 1, expected=False))
        await asyncio.sleep(0.05)
        wide = {"x": np.zeros((1, 2), np.float32)}
        others = [
            asyncio.ensure_future(b.submit(_x(1), 1, expected=False)),
            asyncio.ensure_future(b.submit(wide, 1, expected=False)),
            asyncio.ensure_future(b.submit(_x(2), 1, expected=False)),
        ]
        await asyncio.sleep(0.01)
        model.gate.set()  # type: ignore[union-attr]
        await asyncio.gather(first, *others)
        await b.stop()

    run(main)
    assert model.batches == [1, 1, 1, 1]


def test_drain_waits_for_running_work() -> None:
    model = FakeModel(delay=0.1)

    async def main() -> None:
        b = Batcher(model, max_batch_size=8, max_delay=0.0, max_queue=100)
        b.start()
        pending = [asyncio.ensure_future(b.submit(_x(i), 1, expected=False)) for i in range(3)]
        await asyncio.sleep(0)
        assert await b.drain(60.0)
        assert all(p.done() for p in pending)
        await b.stop()

    run(main)
