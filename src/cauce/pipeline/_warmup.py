"""Getting a step ready while the step before it runs.

A step kind may say what it will need (:class:`Warmup`): modules to import and a ``local[2]``
Spark session (the ``evaluate`` step's MLlib baselines: about 5 s of two cores to start, 10 s
on a busy machine). When the step before it starts, the runner arms a :class:`Warmer`. Its
thread waits for a spare core (``auto``: after the step's first 10 s, a core at least 3/4 idle
for 1 s in a row, of the CPUs this process may run on and, in a container, of its cgroup's CPU
quota, see :func:`cauce._util.machine.spare_cores`; where there is no ``/proc/stat``, never) or
not at all (``now``); then it imports the modules and starts the session, with Spark's log in a
file instead of the terminal, and runs a small job in it (a JVM's first job takes 2 to 3 s
longer than the next ones). The step takes the session when it runs, waiting if it is still
starting; a step that is skipped, or a pipeline that stops, stops it. ``CAUCE_WARMUP=off`` turns
this off.

Nothing is warmed for a Spark master (``--cluster spark://...``, ``local[N]``): an application
started early would hold the cluster's executors while the earlier steps run.

Why it waits for a spare core rather than starting at once at the lowest priority: tried on the
flights pipeline (2 cores, Linux 6.18), a JVM started with the training step in the idle
scheduling class (``SCHED_IDLE``, which yields the CPU to any other task at once) still made
that step's 8 epochs take 14 to 16 s instead of 10 (cache and memory contention with the DDP
ranks), more than the 3.5 s it saved the evaluate step; at nice 19 it was the same.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cauce._util.machine import CpuSample, cpu_sample, spare_cores
from cauce.errors import SpecError

__all__ = ["MODES", "Warmer", "Warmup", "warmup_mode"]

log = logging.getLogger(__name__)

MODES = ("auto", "now", "off")
#: What counts as a spare core, and for how long, before ``auto`` starts anything. (On the
#: flights pipeline a training step's epochs never left a core idle for 1 s; 3 s started the
#: session 2 s later than the core it waited for, which the evaluate step then waited for.)
SPARE_CORES = 0.75
SPARE_SECONDS = 1.0
#: Spare cores in a step's first seconds say little of later: its processes are starting
#: (a job's imports take one core for a few seconds before its ranks take all of them).
SETTLE_SECONDS = 10.0
_SAMPLE = 0.5  # seconds between two readings of the CPU times
#: The longest a stopping pipeline waits for a session that is still starting.
_JOIN_TIMEOUT = 120.0


@dataclass(frozen=True)
class Warmup:
    """What a step will need: ``modules`` to import, a ``local[2]`` Spark session named
    ``spark_app`` (if not None), its log to ``spark_log``."""

    modules: tuple[str, ...] = ()
    spark_app: str | None = None
    spark_log: Path | None = None


def warmup_mode(environ: Mapping[str, str]) -> str:
    value = environ.get("CAUCE_WARMUP", "").strip().lower() or "auto"
    if value not in MODES:
        raise SpecError(
            "CAUCE_WARMUP",
            f"must be one of {', '.join(MODES)}, got {value!r}; auto starts what the next step "
            "needs while a core is spare, now starts it at once, off never does",
        )
    return value


class Warmer:
    """Warms one step at a time (see the module's docstring); used by one runner thread."""

    def __init__(
        self,
        mode: str,
        *,
        reading: Callable[[], CpuSample | None] = cpu_sample,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.mode = mode
        self.settle = settle
        self._reading = reading
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._plan: Warmup | None = None
        self._step = ""  # the step during which it was armed
        self._session: Any = None
        self._stack = contextlib.ExitStack()
        self._began = 0.0  # when the thread started the session, for the message
        self._ready = 0.0

    def arm(self, plan: Warmup, during: str) -> None:
        """Start getting ``plan`` ready while step ``during`` runs."""
        self.discard()
        if self.mode == "off":
            return
        self._cancel = threading.Event()
        self._plan, self._step = plan, during
        self._thread = threading.Thread(target=self._run, name="cauce-warmup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        plan = self._plan
        assert plan is not None
        if self.mode == "auto" and not self._wait_for_a_spare_core():
            return
        for name in plan.modules:
            if self._cancel.is_set():
                return
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # the step itself will say what is wrong
                    log.debug("warm-up: cannot import %s: %s", name, exc)
        if plan.spark_app is None or self._cancel.is_set():
            return
        from cauce.serve import scoring_session

        self._began = time.monotonic()
        try:
            if plan.spark_log is not None:
                plan.spark_log.parent.mkdir(parents=True, exist_ok=True)
            session = self._stack.enter_context(
                scoring_session("local[2]", plan.spark_app, log=plan.spark_log)
            )
            session.range(1000).count()  # a first job costs 2 to 3 s more than the next ones
            self._session, self._ready = session, time.monotonic()
        except Exception as exc:  # the step starts its own session, and says what fails
            log.debug("warm-up: cannot start Spark: %s", exc)
            self._drop()  # a session whose first job failed: stopped, not left to the step

    def _wait_for_a_spare_core(self) -> bool:
        """True once a core has been spare for SPARE_SECONDS, counted after the step's first
        SETTLE_SECONDS; False if cancelled first or where the CPU times cannot be read."""
        if self._cancel.wait(self.settle):
            return False
        before = self._reading()
        if before is None:
            return False
        spare_since: float | None = None
        while not self._cancel.wait(_SAMPLE):
            after = self._reading()
            if after is None:
                return False
            now = time.monotonic()
            if spare_cores(before, after) >= SPARE_CORES:
                spare_since = spare_since if spare_since is not None else now - _SAMPLE
                if now - spare_since >= SPARE_SECONDS:
                    return True
            else:
                spare_since = None
            before = after
        return False

    def take_spark(self, app: str, owner: contextlib.ExitStack) -> tuple[Any, str] | None:
        """The warmed session for ``app`` and a note saying so, stopped when ``owner`` closes;
        None if there is none (not armed for it, not started yet, and then it never will be,
        or it failed to start)."""
        plan, thread = self._plan, self._thread
        if plan is None or plan.spark_app != app or thread is None:
            return None
        if not self._began:  # still waiting for a core, or importing: no session from here
            self._cancel.set()
        thread.join()
        self._plan, self._thread = None, None
        session, self._session = self._session, None
        owner.enter_context(self._stack.pop_all())
        if session is None:
            return None
        note = f"started during step {self._step} in {self._ready - self._began:.1f} s"
        if plan.spark_log is not None:
            note += f"; Spark's log: {plan.spark_log}"
        return session, note

    def discard(self) -> None:
        """Stop what was started and not taken; wait (bounded) for a session still starting."""
        thread, self._thread, self._plan = self._thread, None, None
        self._cancel.set()
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)
        self._session = None
        self._began = self._ready = 0.0
        self._drop()

    close = discard

    def _drop(self) -> None:
        """Stop what the stack holds as after a failure: the classes of a JVM that did no step's
        work are not worth an archive (``scoring_session``), nor the seconds a pipeline that
        ends or stops would wait for it to be written."""
        unused = _Unused()
        self._stack.__exit__(_Unused, unused, None)


class _Unused(Exception):
    """What a warmed session that no step took is closed with."""
