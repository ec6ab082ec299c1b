"""The tuner's side of prompt pruning (the task's is ``cauce.runtime._verdict``): one socket per
tuner, on which a trial's objective task, at a step the pruner judges, sends the value it just
reported and waits for the verdict. The value is passed to Optuna and the pruner asked at once,
instead of at the driver's next read of the progress files, so that a pruned trial stops at
the report where it was judged.

Threads: one thread accepts and answers, one request at a time; ``register`` and ``unregister``
come from the tuner's thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable

from cauce.history import log_failure
from cauce.spec import PrunerSpec

__all__ = ["VERDICT_WAIT", "VerdictServer", "first_rung_warning", "judged_steps_of"]

logger = logging.getLogger(__name__)

#: Seconds a task waits for the verdict at a judged step before going on (today's behaviour:
#: the verdict then reaches it at a later report). The tuner answers in a few milliseconds on an
#: idle machine (an Optuna report and a pruner's look at the study); more on a busy one.
VERDICT_WAIT = 0.2

#: A judge: the (step, value) reports since the last request, in order -> the reason to stop,
#: or None to go on.
Judge = Callable[[list[tuple[int, float]]], "str | None"]


def judged_steps_of(pruner: PrunerSpec) -> str | None:
    """The steps at which ``pruner`` judges a trial, as ``CAUCE_VERDICT_STEPS`` says them."""
    if pruner.type in ("asha", "hyperband"):
        return f"rungs:{pruner.min_steps}:{pruner.reduction_factor}"
    if pruner.type == "median":
        return f"from:{pruner.warmup_steps}"
    return None


def first_rung_warning(pruner: PrunerSpec) -> str:
    """A word for people when the pruner's first judgement rests on a single report (ASHA at
    ``min_steps`` 1: steps 0 and 1; the median pruner without warm-up: step 0), where the
    configurations that win are often cut (docs/tuning.md, "Choosing a pruner"); else ""."""
    if pruner.type == "asha" and pruner.min_steps <= 1:
        return (
            "warning: pruner asha with min_steps 1 judges trials after their first report or "
            "two, where the configurations that win are often cut; give min_steps of 3 or more, "
            "or use hyperband (the default)"
        )
    if pruner.type == "median" and pruner.warmup_steps == 0:
        return (
            "warning: pruner median with warmup_steps 0 judges trials from their first report, "
            "where the configurations that win are often cut; give warmup_steps of 3 or more"
        )
    return ""


class VerdictServer:
    def __init__(self) -> None:
        self.address = f"@cauce-verdict-{os.getpid()}-{secrets.token_hex(4)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind("\0" + self.address.removeprefix("@"))
        self._sock.listen(16)
        self._sock.settimeout(0.5)  # to see close() in time
        self._judges: dict[str, Judge] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="cauce-verdicts", daemon=True)
        self._thread.start()

    def env(self, pruner: PrunerSpec, metric: str, task: str) -> dict[str, str]:
        """The variables that tell a trial's tasks to ask (none without a pruner)."""
        steps = judged_steps_of(pruner)
        if steps is None:
            return {}
        return {
            "CAUCE_VERDICT_ADDRESS": self.address,
            "CAUCE_VERDICT_TASK": task,
            "CAUCE_VERDICT_METRIC": metric,
            "CAUCE_VERDICT_STEPS": steps,
            "CAUCE_VERDICT_WAIT": f"{VERDICT_WAIT:g}",
        }

    def register(self, job_id: str, judge: Judge) -> None:
        with self._lock:
            self._judges[job_id] = judge

    def unregister(self, job_id: str) -> None:
        with self._lock:
            self._judges.pop(job_id, None)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.connect("\0" + self.address.removeprefix("@"))  # accept() returns now
        self._thread.join()
        self._sock.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                if self._closed.is_set():
                    return
                try:
                    self._answer(conn)
                except Exception as exc:  # never let one bad request end the verdicts of all
                    log_failure(logger, exc, "could not answer a trial's request for a verdict")

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(VERDICT_WAIT)
        data = b""
        with contextlib.suppress(OSError):
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        try:
            request = json.loads(data)
            job_id = str(request["j"])
            reports = [(int(step), float(value)) for step, value in request["r"]]
        except (ValueError, KeyError, TypeError):
            logger.debug("unreadable verdict request %r", data[:200])
            return
        with self._lock:
            judge = self._judges.get(job_id)
        reason = judge(reports) if judge is not None and reports else None
        answer = "go" if reason is None else f"stop {reason}"
        with contextlib.suppress(OSError):  # the task went on without waiting longer
            conn.sendall(answer.encode() + b"\n")
