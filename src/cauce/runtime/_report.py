"""``cauce.report(step, **metrics)`` and ``cauce.heartbeat()``: progress, cheap enough per step.

Each call appends one JSON line to this task's progress file (``$CAUCE_PROGRESS_FILE``, set by
the driver), which the driver reads about once a second: the values go to the history store
(``cauce show``, ``cauce metrics``), and the time of the last line is what hang detection
watches. In a trial, at a step the tuner's pruner judges, the report waits a bounded time for
the verdict (``_verdict.py``). Without a driver, reports go nowhere and cost nothing. With
``tensorboard: {report: true}`` in the job they are also written as TensorBoard scalars
(``cauce.runtime._tensorboard``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO

from cauce.runtime._tensorboard import scalars
from cauce.runtime._verdict import Verdicts

__all__ = ["TrialPruned", "heartbeat", "report"]


class TrialPruned(SystemExit):
    """Raised by :func:`report` once the driver asked this task to stop (a tuner pruned the
    trial, or ``cauce kill``). It is a ``SystemExit`` with code 0, so a script that does not
    catch it ends quietly and is not counted as failed; catch it to clean up first."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(0)
        self.reason = reason


class _Channel:
    """The open progress file of this process (reopened if the variable changes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.file: IO[str] | None = None
        self.path: str | None = None
        self.attempt = 0
        self.control: str | None = None
        self.next_check = 0.0
        self.verdicts = Verdicts()

    def stream(self) -> IO[str] | None:
        path = os.environ.get("CAUCE_PROGRESS_FILE")
        if not path:
            return None
        if self.file is None or path != self.path:
            if self.file is not None:
                self.file.close()
            self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process
            self.path = path
            self.attempt = int(os.environ.get("CAUCE_ATTEMPT", "0") or 0)
            self.control = os.environ.get("CAUCE_CONTROL_FILE")
        return self.file

    def check_stop(self) -> None:
        """Raise TrialPruned if the driver wrote the control file (looked at 10 times a s)."""
        if self.control is None:
            return
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + 0.1
        try:
            with open(self.control, encoding="utf-8") as file:
                reason = file.read().strip()
        except FileNotFoundError:
            return
        raise TrialPruned(reason)

    def write(self, record: dict[str, object]) -> None:
        with self.lock:
            stream = self.stream()
            if stream is None:
                return
            record["a"] = self.attempt
            stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            stream.flush()


_channel = _Channel()


def report(step: int, /, **metrics: float) -> None:
    """Record metric values at ``step`` (an int that grows: batch, epoch...).

    Values must be real numbers; NaN and infinities are kept, so that a diverging run shows.
    """
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"cauce.report: step must be an int, got {step!r}")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"cauce.report: metric {name!r} must be a number, got {value!r}"
            ) from None
        values[name] = number
    now = time.time()
    _channel.write({"t": now, "s": step, "m": values})
    scalars(now, step, values)  # with tensorboard: {report: true} only
    with _channel.lock:  # at a step the tuner's pruner judges: its verdict, a bounded wait
        stop = _channel.verdicts.ask(step, values)
    if stop is not None:
        raise TrialPruned(stop)
    _channel.check_stop()


def heartbeat() -> None:
    """Say "still making progress" without a metric (for long steps and hang detection)."""
    _channel.write({"t": time.time(), "hb": 1})
