"""The driver of one job: carries out the state machine's instructions on a cluster.

It owns the clock, the signals, the processes (through the cluster) and the history rows; every
decision about starting, stopping and restarting is the state machine's.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cauce._util.signals import handle_signals
from cauce.cluster.api import Cluster, Reservation, RunningGang, TaskExit, Waiting
from cauce.errors import ClusterError, PlacementError
from cauce.gang import _machine as m
from cauce.gang._console import Console, PrintConsole
from cauce.gang._dryrun import plan_dry_run
from cauce.gang._hang import first_hung, show_stacks
from cauce.gang._horovod import HorovodRendezvous
from cauce.gang._logtail import attempt_header
from cauce.gang._plan import AttemptPlan, build_attempt, gang_request
from cauce.gang._preflight import preflight
from cauce.gang._progress import ProgressReader
from cauce.gang._record import JobRecord, new_job_id
from cauce.gang._result import JobResult, render_root_cause
from cauce.gang._shared import local_path_warnings
from cauce.gang._starting import history_gone, record_crash, start_refused, wait_until_placed
from cauce.gang._tensorboard import make_tensorboard_dir, tensorboard_chief_env, tensorboard_env
from cauce.gang._tracking import DriverTracking, JobTracking, RunLink, without_tracking_env
from cauce.history import HistoryStore, JobStatus, MetricRow, TaskStatus
from cauce.spec import JobSpec

__all__ = ["JobDriver"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

logger = logging.getLogger(__name__)


class JobDriver:
    def __init__(
        self,
        spec: JobSpec,
        cluster: Cluster,
        store: HistoryStore,
        home: Path,
        *,
        console: Console | None = None,
        environ: Mapping[str, str] | None = None,
        job_id: str | None = None,
        poll_interval: float = 1.0,
        params: Mapping[str, object] | None = None,
        on_metrics: Callable[[list[MetricRow]], None] | None = None,
        kind: str = "job",
        tracking: JobTracking | RunLink | None = None,
    ) -> None:
        """``params`` reach every task as ``cauce.context().params`` (``CAUCE_PARAMS``);
        ``on_metrics`` is called from the driver's thread with each batch of reported values
        (the tuner's hook); ``kind`` ("job", "trial", ...) is recorded; ``tracking``: MLflow."""
        self.spec = spec
        self.cluster = cluster
        self.store = store
        self.console: Console = console or PrintConsole()
        self.environ = dict(os.environ if environ is None else environ)
        self.job_id = job_id or new_job_id(spec.name)
        self.run_dir = home / "runs" / self.job_id
        self.log_dir = self.run_dir / "logs"
        self.progress = ProgressReader(self.run_dir / "progress")
        self.request = gang_request(spec, self.job_id)
        self.poll_interval = poll_interval
        self.params = dict(params or {})
        self.on_metrics = on_metrics
        self.kind = kind
        self.control_file = self.run_dir / "control" / "stop"
        self.record = JobRecord(store, self.job_id)
        # SimpleQueue: its put() is reentrant, safe from the signal handler even while the main
        # thread is inside get() (a Queue's lock would deadlock there).
        self._events: queue.SimpleQueue[m.Event] = queue.SimpleQueue()
        self._machine = m.GangMachine.for_tasks(
            [t.task_id for t in self.request.tasks],
            [t.task_id for t in self.request.tasks if t.tracked],
            spec.restart,
        )
        self._reservation: Reservation | None = None
        self._running: RunningGang | None = None
        self._plan: AttemptPlan | None = None
        self._deadline: float | None = None  # job timeout, monotonic
        self._restart_at: float | None = None
        self._started: float | None = None
        self._horovod = (
            HorovodRendezvous(cluster.driver_address) if spec.framework == "horovod" else None
        )
        self._last_sign: dict[str, float] = {}  # task -> monotonic time of its last progress
        self._task_started: float = 0.0
        self.tracking = DriverTracking(tracking)  # a run the caller opened, or its parent
        self._asked_to_stop = ""  # why, once ask_to_stop was called (a tuner pruned the trial)

    def dry_run(self) -> str:
        """The resolved plan: each task's placement, ports, GPUs and environment."""
        return plan_dry_run(self)

    def _build(
        self,
        got: Reservation,
        attempt: int,
        rendezvous: str | None,
        ports: Mapping[str, int] | None,
    ) -> AttemptPlan:
        return build_attempt(
            self.spec,
            self.request,
            got,
            job_id=self.job_id,
            attempt=attempt,
            log_dir=str(self.log_dir),
            environ=self._task_environ(),
            rendezvous=rendezvous,
            ports=ports,
            progress_dir=str(self.progress.folder),
            extra_env=tensorboard_env(self.spec, self.job_id, str(self.run_dir))
            | ({"CAUCE_PARAMS": json.dumps(self.params, default=str)} if self.params else {}),
            chief_env=tensorboard_chief_env(self.spec),
        )

    def _task_environ(self) -> dict[str, str]:
        run = {"CAUCE_RUN_DIR": str(self.run_dir), "CAUCE_CONTROL_FILE": str(self.control_file)}
        return without_tracking_env(self.environ) | run | {"CAUCE_HISTORY": self.store.url}

    # --- steering from other threads -----------------------------------------------------------

    def ask_to_stop(self, reason: str) -> None:
        """Ask the tasks to stop by themselves: their next ``cauce.report`` raises
        :class:`cauce.TrialPruned`, and the job ends as pruned. Thread-safe; pair it with
        :meth:`stop` after a grace period for tasks that do not report."""
        self._asked_to_stop = reason
        self.control_file.parent.mkdir(parents=True, exist_ok=True)
        self.control_file.write_text(reason + "\n", encoding="utf-8")

    def stop(self, reason: str) -> None:
        """Stop the gang now (SIGTERM, grace period, SIGKILL) and end the job as killed.
        Thread-safe."""
        self._events.put(m.StopRequested(reason))

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> JobResult:
        for line in preflight(self.spec, self.cluster, self.request, self.environ):
            self.console.status(line)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.progress.folder.mkdir(parents=True, exist_ok=True)
        make_tensorboard_dir(self.spec, self.job_id, str(self.run_dir))
        self.tracking.open(self)
        try:
            self.record.submitted(
                self.spec,
                kind=self.kind,
                cluster=self.cluster.name,
                run_dir=str(self.run_dir),
                tasks=len(self.request.tasks),
            )
            self.console.status(
                f"job {self.job_id}: {len(self.request.tasks)} tasks, run folder {self.run_dir}"
            )
            with self.record.beating(), handle_signals(_STOP_SIGNALS, self._on_signal):
                return self._run()
        except Exception as exc:  # recorded (a row is never left running), then raised
            gone = history_gone(self.job_id, self.store, exc)
            if gone is not None:  # nothing more can be recorded: the tasks stop, in _cleanup
                raise gone from exc
            attempts = self._machine.attempt + 1 if self._started is not None else 0
            record_crash(self.record, exc, attempts=attempts, restarts=self._machine.restarts)
            raise
        finally:
            self._cleanup()
            self.tracking.close(self.console)

    def _on_signal(self, signum: int) -> None:
        self.store.give_up()  # a write waiting for an unanswering history does not hold it up
        self._events.put(m.StopRequested(f"interrupted ({signal.Signals(signum).name})"))

    def _cleanup(self) -> None:
        if self._running is not None:
            self._running.stop(grace=self.spec.grace_period)
            self._running = None
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        if self._horovod is not None:
            self._horovod.stop()
        # The cluster is its owner's to close (whoever opened it), not the driver's.

    def _wait_for_reservation(self) -> m.Finish | None:
        def reserve() -> Waiting | None:
            got = self.cluster.try_reserve(self.request)
            if isinstance(got, Waiting):
                return got
            self._reservation = got
            return None

        stopped = self._wait_until_placed(reserve)
        return None if stopped is None else m.Finish(JobStatus.KILLED, reason=stopped.reason)

    def _wait_until_placed(self, place: Callable[[], Waiting | None]) -> m.StopRequested | None:
        return wait_until_placed(place, self._events, self.poll_interval, self.console, self.record)

    def _place_again(self) -> m.Finish | m.StopRequested | None:
        """Before a restart: the cluster checks again that the gang fits (a host may be gone),
        and the job waits, saying why, as before its first attempt. A Finish when the cluster
        gives up, the stop when one is asked for meanwhile, None once placed."""
        assert self._reservation is not None
        try:
            return self._wait_until_placed(self._reservation.renew)
        except PlacementError as exc:
            cause = self._root_cause(self._machine.failure)
            reason = f"{cause}\nthe restart could not be placed: {exc}"
            return m.Finish(JobStatus.FAILED, reason=reason)

    def _run(self) -> JobResult:
        early = self._wait_for_reservation()
        if early is not None:
            return self._finish(early)
        assert self._reservation is not None
        for line in local_path_warnings(self.cluster, self.spec, self.environ, self.run_dir):
            self.console.status(f"warning: {line}")  # placed: a Spark cluster knows its hosts
        placements = self._reservation.placements
        self.record.event("placed", {task: list(p[1]) for task, p in placements.items()})
        pending: list[m.Event] = [m.Reserved()]
        while True:
            while pending:
                event = pending.pop(0)
                row = self._machine.recorded_exit(event)  # failed: written once the gang stops
                for instruction in self._machine.handle(event):
                    if row and not (row[0].returncode and isinstance(instruction, m.StopGang)):
                        self._record_exit(*row)
                        row = None
                    result = self._execute(instruction, pending)
                    if result is not None:
                        return result
                if row:
                    self._record_exit(*row)
            pending.append(self._next_event())

    def _next_event(self) -> m.Event:
        while True:
            now = time.monotonic()
            deadlines = [d for d in (self._deadline, self._restart_at) if d is not None]
            if self._running is not None:
                deadlines.append(now + self.poll_interval)  # the tasks' reports
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            try:
                return self._events.get(timeout=timeout)
            except queue.Empty:
                pass
            hung = self._poll_progress()
            if hung is not None:
                return hung
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                self._deadline = None
                assert self.spec.timeout is not None
                return m.TimedOut(self.spec.timeout)
            if self._restart_at is not None and now >= self._restart_at:
                self._restart_at = None
                return m.RestartDue()

    def _poll_progress(self) -> m.TaskHung | None:
        """Store what tasks reported; the first running task silent for too long is hung."""
        if self._plan is None:
            return None
        self._record_places()
        tasks = [launch.task_id for launch in self._plan.launches]
        rows, alive = self.progress.poll(tasks)
        if rows:
            self.record.metrics(rows)  # written on the record's thread: this loop goes on
            self.tracking.metrics(rows)
            if self.on_metrics is not None:
                self.on_metrics(rows)
        now = time.monotonic()
        for task_id in alive:
            self._last_sign[task_id] = now
        limit = self.spec.hang_timeout
        if limit is None or self._running is None:
            return None
        idle = {
            task_id: now - self._last_sign.get(task_id, self._task_started)
            for task_id in tasks
            if task_id not in self._machine.exits and task_id in self._machine.tracked
        }
        runtime = now - self._task_started
        return first_hung(self._running, idle, limit, runtime, self._machine.attempt)

    def _execute(self, instruction: m.Instruction, pending: list[m.Event]) -> JobResult | None:
        match instruction:
            case m.StartAttempt(attempt=attempt):
                again = self._place_again() if attempt > 0 else None
                if again is None:
                    again = self._start_attempt(attempt)  # a Finish if the cluster refuses
                if isinstance(again, m.Finish):
                    return self._finish(again)
                if again is not None:
                    pending.append(again)  # stopped while waiting: the machine ends the job
            case m.StopGang(reason=reason):
                self._record_places()
                show_stacks(self._machine.failure if reason == "failure" else None, self._running)
                if self._running is not None:
                    grace = self.spec.grace_period
                    self._running.stop(grace)
                    self._running = None
                self.record.event("stopped", {"reason": reason})
                # Every exit of this attempt is queued by now; GangStopped comes after them.
                self._events.put(m.GangStopped())
            case m.WaitBeforeRestart(delay=delay, restart=number, max_restarts=most):
                cause = self._root_cause(self._machine.failure)
                self.console.status(cause)
                self.console.status(
                    f"restarting the gang in {delay:g} s (restart {number} of {most})"
                )
                self.record.restarting(number, delay, cause)
                self._restart_at = time.monotonic() + delay
            case m.Finish():
                return self._finish(instruction)
        return None

    def _start_attempt(self, attempt: int) -> m.Finish | None:
        assert self._reservation is not None
        rendezvous = self._horovod.for_attempt() if self._horovod is not None else None
        plan = self._build(self._reservation, attempt, rendezvous, None)
        self._plan = plan
        self._last_sign = {}
        self._task_started = time.monotonic()
        for launch in plan.launches:
            with open(launch.log_path, "a", encoding="utf-8") as log:
                log.write(attempt_header(attempt, self.job_id))
        events = self._events

        def on_exit(done: TaskExit) -> None:
            events.put(m.TaskExited(done.task_id, done.returncode, done.runtime, attempt))

        try:
            grace, output = self.spec.grace_period, self.console.output
            self._running = self.cluster.start(
                plan.layout, plan.launches, output, on_exit, grace=grace
            )
        except ClusterError as exc:
            earlier = self._root_cause(self._machine.failure)
            return start_refused(exc, attempt, self.cluster.name, earlier)
        if first := self._started is None:
            self._started = time.monotonic()
            if self.spec.timeout is not None:
                self._deadline = self._started + self.spec.timeout
        self.record.attempt_started(plan, attempt, self._running.pids(), first=first)
        gpus = {s.task_id: ",".join(s.gpus) for s in plan.layout.slots if s.gpus}
        extra = f", GPUs {gpus}" if gpus else ""
        self.console.status(f"attempt {attempt + 1}: started {len(plan.launches)} tasks{extra}")
        return None

    def _record_places(self) -> None:
        """Hosts, ports and pids that the cluster learns only as tasks start (Spark)."""
        if self._running is not None:
            self.record.places(self._machine.attempt, self._running.places())

    def _record_exit(self, event: m.TaskExited, status: TaskStatus) -> None:
        self._record_places()
        self.record.task_exited(event, status)

    def _root_cause(self, failure: m.Failure | None) -> str:
        if failure is None:
            return ""
        log = str(self.log_dir / f"{failure.task_id}.log")
        permanent = self._machine.permanent and self.spec.restart.max_restarts > 0
        return render_root_cause(failure, log, self.spec.hang_timeout, permanent=permanent)

    def _finish(self, finish: m.Finish) -> JobResult:
        self._poll_progress()  # the last reports of the last attempt
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        cause = self._root_cause(finish.failure) if finish.failure else finish.reason
        if self._asked_to_stop:  # however the gang ended after being told to stop
            finish = m.Finish(JobStatus.PRUNED, finish.failure, finish.reason)
            cause = "\n".join(filter(None, (self._asked_to_stop, cause)))
        attempts = self._machine.attempt + 1
        restarts = self._machine.restarts
        self.record.finished(finish.status, cause, attempts=attempts, restarts=restarts)
        self.tracking.finished(str(finish.status), cause, attempts, restarts, self.log_dir)
        return JobResult(
            job_id=self.job_id,
            status=finish.status,
            root_cause=cause,
            attempts=attempts,
            restarts=self._machine.restarts,
            run_dir=str(self.run_dir),
            failure=finish.failure,
        )
