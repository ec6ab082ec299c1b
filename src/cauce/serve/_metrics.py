"""Prometheus metrics of a model server (``GET /metrics``).

With several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``cauce serve`` before any worker
starts, and every worker answers ``/metrics`` with the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


def _size_buckets(max_batch_size: int) -> tuple[float, ...]:
    sizes = [1.0]
    while sizes[-1] < max_batch_size:
        sizes.append(min(sizes[-1] * 2, float(max_batch_size)))
    return tuple(sizes)


class ServeMetrics:
    """The server's counters; also a :class:`~cauce.serve._batcher.BatchObserver`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cauce_serve_requests",
            "HTTP requests answered, by endpoint and status code",
            ["model", "endpoint", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "cauce_serve_request_duration_seconds",
            "Time from the request's arrival to its response, by endpoint",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        sizes = _size_buckets(max_batch_size)
        self.batch_rows = self._per_model("cauce_serve_batch_size", "Rows in each model run", sizes)
        self.batch_requests = self._per_model(
            "cauce_serve_batch_requests", "Requests grouped into each model run", sizes
        )
        self.run_seconds = self._per_model(
            "cauce_serve_inference_duration_seconds", "Time of each model run", _LATENCY_BUCKETS
        )
        self.queue = Gauge(
            "cauce_serve_queue_depth",
            "Requests waiting for the model",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.errors = Counter(
            "cauce_serve_errors",
            "Requests answered with an error, by kind",
            ["model", "kind"],
            registry=r,
        )
        self._model = model
        self._queue = self.queue.labels(model)
        self._rows = self.batch_rows.labels(model)
        self._reqs = self.batch_requests.labels(model)
        self._run = self.run_seconds.labels(model)
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def _per_model(self, name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, text, ["model"], buckets=buckets, registry=self.registry)

    def answered(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        pair = self._children.get(key)
        if pair is None:
            pair = (
                self.requests.labels(self._model, endpoint, str(code)),
                self.latency.labels(self._model, endpoint),
            )
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(self._model, kind).inc()

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        self._rows.observe(rows)
        self._reqs.observe(requests)
        self._run.observe(seconds)

    def depth(self, requests: int) -> None:
        self._queue.set(requests)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
