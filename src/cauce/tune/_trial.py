"""One running trial: a :class:`JobDriver` in a thread, and the hook that feeds its reports to
the pruner.

Threads: the driver calls :meth:`TrialRun.on_metrics` and the console methods from its own
thread; the tuner's thread reads :meth:`info` and :meth:`outcome` and calls :meth:`prune_overdue`
and :meth:`interrupt`. Every shared field is behind ``_lock``; news for the tuner go through
its event queue.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cauce.gang import JobDriver, JobResult
from cauce.history import MetricRow, log_failure
from cauce.tune.api import TrialInfo, TrialState

if TYPE_CHECKING:
    import optuna

__all__ = ["Outcome", "TrialRun"]

logger = logging.getLogger(__name__)

TAKEN = "taken over by another tuner of the study"


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, for the study: ``complete`` (with ``value``), ``pruned``, ``failed``
    (``cause`` is the root cause), ``interrupted`` (the tuner stopped it; to be retried) or
    ``taken`` (another tuner ended it meanwhile, and runs it again: nothing to record here)."""

    state: Literal["complete", "pruned", "failed", "interrupted", "taken"]
    value: float | None = None
    cause: str = ""


class TrialRun:
    def __init__(
        self,
        trial: optuna.Trial,
        params: Mapping[str, Any],
        *,
        metric: str,
        task: str,
        events: queue.Queue[tuple[str, TrialRun]],
        pruning: bool,
    ) -> None:
        self.trial = trial
        self.number = trial.number
        self.params = dict(params)
        self.metric = metric
        self.task = task
        self.pruning = pruning
        self.driver: JobDriver | None = None
        self._events = events
        self._lock = threading.Lock()
        # Reports reach Optuna from the driver's thread and, at judged steps, from the verdict
        # server's; one at a time, in order of steps.
        self._judging = threading.Lock()
        self._state = TrialState.RUNNING
        self._note = "starting"
        self._value: float | None = None
        self._step: int | None = None
        self._reported_step = -1
        self._pruned_step: int | None = None
        self._pruned_at: float | None = None  # monotonic
        self._stopped = False
        self._interrupted = ""
        self._taken = ""
        self.result: JobResult | None = None
        self.error: str = ""
        self.started_at = time.time()
        self.ended_at: float | None = None
        self._thread: threading.Thread | None = None

    # --- the tuner's side ----------------------------------------------------------------------

    def start(self, driver: JobDriver) -> None:
        self.driver = driver
        self._thread = threading.Thread(
            target=self._main, name=f"cauce-trial-{self.number}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        assert self.driver is not None
        try:
            self.result = self.driver.run()
        except Exception as exc:
            # A trial whose driver broke (a history write failed, a bug) is a failed trial;
            # the study goes on and says why.
            log_failure(
                logger, exc, "trial %d: the driver of job %s failed", self.number, self.job_id
            )
            self.error = f"the driver of job {self.job_id} failed: {type(exc).__name__}: {exc}"
        finally:
            self.ended_at = time.time()
            self._events.put(("ended", self))

    @property
    def job_id(self) -> str:
        return self.driver.job_id if self.driver is not None else ""

    def info(self) -> TrialInfo:
        with self._lock:
            state, note = self._state, self._note
            if self.ended_at is None and self._pruned_step is not None:
                state, note = TrialState.RUNNING, f"pruned at step {self._pruned_step}, stopping"
            return TrialInfo(
                number=self.number,
                state=state,
                params=self.params,
                value=self._value,
                step=self._step,
                job_id=self.job_id or None,
                started_at=self.started_at,
                ended_at=self.ended_at,
                note=note,
            )

    def interrupt(self, reason: str) -> None:
        """Stop the gang now; the trial is to be retried by a later run."""
        with self._lock:
            if not self._interrupted:
                self._interrupted = reason
        if self.driver is not None:
            self.driver.stop(reason)

    def take_away(self, reason: str) -> None:
        """Stop the gang now: another tuner has ended the trial (and runs it again)."""
        with self._lock:
            self._taken = reason
        if self.driver is not None:
            self.driver.stop(reason)

    def prune_overdue(self, grace: float) -> bool:
        """Stop the gang of a pruned trial that has not stopped by itself within ``grace``
        seconds (a task that does not report, or ranks stuck in a collective). True if it
        stopped it now."""
        with self._lock:
            if self._pruned_at is None or self._stopped:
                return False
            if time.monotonic() - self._pruned_at < grace:
                return False
            self._stopped = True
            step = self._pruned_step
        if self.driver is not None:
            self.driver.stop(f"pruned at step {step}; did not stop within {grace:g} s")
        return True

    def outcome(self) -> Outcome:
        """How it ended (call once the thread has ended)."""
        with self._lock:
            interrupted, pruned_step = self._interrupted, self._pruned_step
            value, step, taken = self._value, self._step, self._taken
        result = self.result
        if taken:
            return Outcome("taken", cause=taken)
        if pruned_step is not None:
            # Whatever the gang did after being told to stop (exit 0 at its next report, or
            # killed after the grace period), the trial was pruned.
            return Outcome("pruned", cause=f"pruned at step {pruned_step}")
        if interrupted and (result is None or not result.ok):
            return Outcome("interrupted", cause=interrupted)
        if self.error or result is None:
            return Outcome(
                "failed", cause=self.error or "the trial's driver ended without a result"
            )
        if not result.ok:
            return Outcome("failed", cause=result.root_cause or f"job {result.status}")
        if value is None:
            return Outcome(
                "failed",
                cause=f"{self.task} never reported {self.metric} (cauce.report(step, "
                f"{self.metric}=...)), so the trial cannot be judged",
            )
        if math.isnan(value):
            return Outcome("failed", cause=f"the last {self.metric} is NaN (step {step})")
        return Outcome("complete", value=value)

    @property
    def pruned_step(self) -> int | None:
        with self._lock:
            return self._pruned_step

    # --- the driver's side (its Console and its on_metrics hook) -------------------------------

    def status(self, text: str) -> None:
        logger.debug("trial %d: %s", self.number, text)
        with self._lock:
            if text.startswith("waiting: "):
                self._state, self._note = TrialState.WAITING, text.removeprefix("waiting: ")
            elif text.startswith("attempt "):
                self._state, self._note = TrialState.RUNNING, ""
            else:
                return
        self._events.put(("changed", self))

    def output(self, task_id: str, line: str) -> None:
        """Task output goes to the trial's logs only (``cauce logs JOB``)."""

    def on_metrics(self, rows: list[MetricRow]) -> None:
        try:
            self._on_metrics(rows)
        except Exception as exc:
            # Never let the tuner's bookkeeping kill a trial's driver: the job goes on unpruned.
            log_failure(logger, exc, "trial %d: could not pass reports to the pruner", self.number)

    def _on_metrics(self, rows: list[MetricRow]) -> None:
        new = [(r.step, r.value) for r in rows if r.task_id == self.task and r.name == self.metric]
        if not new:
            return
        # The pruner is asked after each step, as if the script called it in-process: ASHA
        # keeps a trial's value at each rung, which must be the value at the rung's step.
        judge = self.pruning and self.pruned_step is None and self._still_running()
        with self._judging:
            for step, value in new:
                if self._report(step, value) and judge and self.trial.should_prune():
                    self._prune(step)
                if self.pruned_step is not None:
                    break
        self._events.put(("changed", self))

    def judge(self, reports: list[tuple[int, float]]) -> str | None:
        """The verdict at the last of ``reports`` (the objective's values since the last
        request, in order), asked by the objective task itself as it reports, from the verdict
        server's thread: the reason to stop, or None to go on."""
        with self._judging:
            fresh = False
            for step, value in reports:
                fresh = self._report(step, value)
            if fresh and self.pruning and self.trial.should_prune():
                self._prune(reports[-1][0])
            pruned = self.pruned_step
        self._events.put(("changed", self))
        return None if pruned is None else f"pruned by the tuner at step {pruned}"

    def _report(self, step: int, value: float) -> bool:
        """Pass ``step`` to Optuna unless it was (a restarted gang repeats steps) or the trial
        was pruned: what it reports after the decision stays in the job's metrics only, so that
        the sampler, the pruner and the trial's value keep the judged steps. True if passed."""
        with self._lock:
            if self._pruned_step is not None:
                return False
            self._step, self._value = step, value
            if step <= self._reported_step:
                return False
            self._reported_step = step
        import optuna

        try:
            self.trial.report(value, step)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.take_away(TAKEN)  # said by the tuner when the trial ends (_recovery.py)
            return False
        return True

    def _still_running(self) -> bool:
        """False once the objective task has exited: the last reports of a trial that ran to
        its end are read after it ended, and such a trial is complete, not pruned."""
        if self.driver is None:
            return False
        rows = [
            t for t in self.driver.store.get_tasks(self.driver.job_id) if t.task_id == self.task
        ]
        return bool(rows) and rows[-1].ended_at is None

    def _prune(self, step: int) -> None:
        with self._lock:
            self._pruned_step = step
            self._pruned_at = time.monotonic()
        if self.driver is not None:
            self.driver.ask_to_stop(f"pruned by the tuner at step {step}")
            self.driver.store.add_event(
                self.driver.job_id, "pruned", data={"trial": self.number, "step": step}
            )
