"""The task's side of prompt pruning: at a step where the tuner's pruner judges the trial (a rung
of ASHA or Hyperband, any step after the median pruner's warm-up), ``cauce.report`` asks the
tuner for its verdict and waits for it, a bounded time, so that a pruned trial stops at the
report where it was judged rather than at its next one.

The tuner sets, for every task of a trial:

- ``CAUCE_VERDICT_TASK``: the objective task (``worker-0``), the only one that asks;

- ``CAUCE_VERDICT_ADDRESS``: the tuner's socket (an abstract Unix socket name, ``@...``);
- ``CAUCE_VERDICT_METRIC``: the objective's name, sent with its value;
- ``CAUCE_VERDICT_STEPS``: the steps judged: ``rungs:MIN:FACTOR`` (the first report at or after
  each of ``MIN * FACTOR**k``) or ``from:W`` (every step from ``W``);
- ``CAUCE_VERDICT_WAIT``: seconds to wait at most (0: never ask); a job's ``env:`` may set it.

Without them, or when the tuner does not answer in time, nothing changes: the verdict comes at a
later report through the control file, as it always did. Standard library only.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Verdicts", "judged_steps"]

_KEEP = 10_000  # values kept between two requests, at most
_MAX_WAIT = 60.0  # seconds a report waits for a verdict, at most


def judged_steps(spec: str) -> tuple[str, int, int]:
    """``rungs:MIN:FACTOR`` -> ("rungs", MIN, FACTOR); ``from:W`` -> ("from", W, 0)."""
    kind, _, rest = spec.partition(":")
    if kind == "rungs":
        low, _, factor = rest.partition(":")
        return "rungs", max(1, int(low)), max(2, int(factor))
    if kind == "from":
        return "from", int(rest), 0
    raise ValueError(f"unknown judged steps {spec!r}")


class Verdicts:
    """The verdicts of one task. Not thread-safe: called under the report channel's lock."""

    def __init__(self) -> None:
        self._key: tuple[str, str] | None = None
        self._address = ""
        self._metric = ""
        self._kind = ""
        self._low = self._factor = 0
        self._wait = 0.0
        self._next = 0  # the next rung step not yet judged
        # The objective's values since the last request: sent with it, so that Optuna gets
        # every step in order, whether or not the driver has read them yet.
        self._pending: list[tuple[int, float]] = []

    def _configure(self, env: Mapping[str, str]) -> bool:
        address = env.get("CAUCE_VERDICT_ADDRESS", "")
        key = (address, env.get("CAUCE_JOB_ID", ""))
        if key == self._key:
            return bool(self._address)
        self._key, self._address = key, ""
        if not address or env.get("CAUCE_VERDICT_TASK") != env.get("CAUCE_TASK_ID"):
            return False  # not a trial, or not its objective task
        try:
            self._kind, self._low, self._factor = judged_steps(env["CAUCE_VERDICT_STEPS"])
            wait = float(env.get("CAUCE_VERDICT_WAIT", "0.1"))
            # A job's env may set it: nan, inf, negative or huge would break or block report.
            self._wait = min(wait, _MAX_WAIT) if math.isfinite(wait) and wait > 0 else 0.0
            self._metric = env["CAUCE_VERDICT_METRIC"]
        except (KeyError, ValueError):
            return False  # a driver of another version: no prompt verdicts
        self._address = address if self._wait > 0 else ""
        self._next = self._low
        self._pending = []
        return bool(self._address)

    def _is_judged(self, step: int) -> bool:
        if self._kind == "from":
            return step >= self._low
        if step < self._next:
            return False
        # The pruner judges at the first report at or after a rung; the next rung is above it.
        while self._next <= step:
            self._next *= self._factor
        return True

    def ask(self, step: int, metrics: Mapping[str, float]) -> str | None:
        """At a judged step of the objective: the reason to stop if the tuner pruned the trial
        now, else None (go on, or no answer in time)."""
        if not self._configure(os.environ) or self._metric not in metrics:
            return None
        self._pending.append((step, metrics[self._metric]))
        if len(self._pending) > 2 * _KEEP:
            del self._pending[:-_KEEP]
        if not self._is_judged(step):
            return None
        job_id = self._key[1] if self._key is not None else ""
        request = json.dumps({"j": job_id, "r": self._pending}).encode() + b"\n"
        self._pending = []
        deadline = time.monotonic() + self._wait
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self._wait)
                sock.connect("\0" + self._address.removeprefix("@"))
                sock.sendall(request)
                answer = b""
                while not answer.endswith(b"\n"):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    sock.settimeout(left)
                    chunk = sock.recv(4096)
                    if not chunk:
                        return None
                    answer += chunk
        except OSError:  # no tuner there, or too slow: the control file will tell
            return None
        word, _, reason = answer.decode("utf-8", errors="replace").strip().partition(" ")
        if word != "stop":
            return None
        return reason or f"pruned by the tuner at step {step}"
