"""The driver of one job: carries out the state machine's instructions on a cluster.

It owns the clock, the signals, the processes (through the cluster) and the history rows; every
decision about starting, stopping and restarting is the state machine's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from cauce.cluster.api import Cluster, Reservation, RunningGang, TaskExit, Waiting
from cauce.errors import SpecError
from cauce.gang import _machine as m
from cauce.gang._plan import AttemptPlan, build_attempt, gang_request
from cauce.gang._progress import ProgressReader
from cauce.history import HistoryStore, MetricRow
from cauce.spec import JobSpec

__all__ = ["Console", "JobDriver", "JobResult", "PrintConsole", "new_job_id"]

logger = logging.getLogger(__name__)

_TAIL_LINES = 20


class Console(Protocol):
    """Where a driver tells people what happens. Must be thread-safe."""

    def status(self, text: str) -> None: ...

    def output(self, task_id: str, line: str) -> None: ...


class PrintConsole:
    """Task lines to stdout as ``[worker-0] ...``; cauce's own lines to stderr as ``cauce: ...``."""

    def __init__(self, quiet: bool = False) -> None:
        self._lock = threading.Lock()
        self.quiet = quiet

    def status(self, text: str) -> None:
        with self._lock:
            sys.stderr.write(f"cauce: {text}\n")
            sys.stderr.flush()

    def output(self, task_id: str, line: str) -> None:
        if self.quiet:
            return
        with self._lock:
            sys.stdout.write(f"[{task_id}] {line}\n")
            sys.stdout.flush()


@dataclass(frozen=True)
class JobResult:
    job_id: str
    status: str  # succeeded | failed | killed
    root_cause: str
    attempts: int
    restarts: int
    run_dir: str

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def new_job_id(name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (to tell a live driver from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


def log_tail(path: str, lines: int = _TAIL_LINES) -> list[str]:
    """The last lines of the last attempt in a task's log."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    chunk = text.rsplit(_ATTEMPT_MARK, 1)[-1]
    body = chunk.split("\n", 1)[1] if chunk is not text and "\n" in chunk else chunk
    return body.splitlines()[-lines:]


_ATTEMPT_MARK = "=== cauce: attempt "


class _Signals:
    """Turns SIGINT, SIGTERM and SIGHUP into a StopRequested event while the job runs."""

    def __init__(self, events: queue.SimpleQueue[m.Event]) -> None:
        self._events = events
        self._saved: dict[int, object] = {}

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._events.put(m.StopRequested(f"interrupted ({name})"))

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._saved[signum] = signal.signal(signum, self._handler)
        try:
            yield
        finally:
            for number, handler in self._saved.items():
                signal.signal(number, handler)  # type: ignore[arg-type]


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
    ) -> None:
        """``params`` reach every task as ``cauce.context().params`` (``CAUCE_PARAMS``);
        ``on_metrics`` is called from the driver's thread with each batch of reported values
        (the tuner's hook); ``kind`` is recorded in the history ("job", "trial", ...)."""
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
        self._rendezvous_stop: Callable[[], None] | None = None
        self._last_sign: dict[str, float] = {}  # task -> monotonic time of its last progress
        self._task_started: float = 0.0

    # --- dry run -------------------------------------------------------------------------------

    def dry_run(self) -> str:
        """The resolved plan: each task's placement, ports, GPUs and environment."""
        self._check_workdir()
        self.cluster.check(self.request)
        got = self.cluster.try_reserve(self.request)
        lines = [
            f"job {self.spec.name} ({self.spec.framework}): {len(self.request.tasks)} tasks "
            f"on cluster {self.cluster.name}"
        ]
        if isinstance(got, Waiting):
            lines.append(f"waiting: {got.reason} (the plan below is what it would get)")
            return "\n".join([*lines, "(no placement shown while waiting)"])
        try:
            plan = build_attempt(
                self.spec,
                self.request,
                got,
                job_id=self.job_id,
                attempt=0,
                log_dir=str(self.log_dir),
                environ=self._task_environ(),
                rendezvous="127.0.0.1:<port>" if self.spec.framework == "horovod" else None,
                progress_dir=str(self.progress.folder),
                extra_env=self._extra_env(),
            )
        finally:
            got.release()
        for launch, slot in zip(plan.launches, plan.layout.slots, strict=True):
            res = self.request.tasks[plan.layout.slots.index(slot)].resources
            lines.append("")
            lines.append(
                f"{launch.task_id}: host {slot.host} port {slot.port} "
                f"gpus {','.join(slot.gpus) or '-'} cpus {res.cpus:g} "
                f"memory {res.memory or '-'}{'' if slot.tracked else ' (untracked)'}"
            )
            lines.append(f"  command: {shlex.join(launch.argv)}")
            lines.append(f"  cwd: {launch.cwd}")
            lines.append(f"  log: {launch.log_path}")
            lines.append("  env:")
            shown = dict(plan.contract[launch.task_id])
            shown["PATH"] = launch.env.get("PATH", "")
            for key in sorted(shown):
                lines.append(f"    {key}={shown[key]}")
        lines.append("")
        lines.append("(ports are fresh free ports for each attempt; the rest of the environment is")
        lines.append(" inherited from this shell)")
        return "\n".join(lines)

    def _extra_env(self) -> dict[str, str]:
        if not self.params:
            return {}
        return {"CAUCE_PARAMS": json.dumps(self.params, default=str)}

    def _task_environ(self) -> dict[str, str]:
        env = dict(self.environ)
        env["CAUCE_RUN_DIR"] = str(self.run_dir)
        env["CAUCE_HISTORY"] = self.store.url
        env["CAUCE_CONTROL_FILE"] = str(self.control_file)
        return env

    # --- steering from other threads -----------------------------------------------------------

    def ask_to_stop(self, reason: str) -> None:
        """Ask the tasks to stop by themselves: their next ``cauce.report`` raises
        :class:`cauce.TrialPruned`. Thread-safe; pair it with :meth:`stop` after a grace period
        for tasks that do not report."""
        self.control_file.parent.mkdir(parents=True, exist_ok=True)
        self.control_file.write_text(reason + "\n", encoding="utf-8")

    def stop(self, reason: str) -> None:
        """Stop the gang now (SIGTERM, grace period, SIGKILL) and end the job as killed.
        Thread-safe."""
        self._events.put(m.StopRequested(reason))

    # --- the run -------------------------------------------------------------------------------

    def _check_workdir(self) -> None:
        if not os.path.isdir(self.spec.workdir):
            raise SpecError(
                "workdir",
                f"folder {self.spec.workdir!r} does not exist; create it or fix workdir "
                "(relative paths start at the job file's folder)",
                source=self.spec.source,
            )

    def run(self) -> JobResult:
        self._check_workdir()
        self.cluster.check(self.request)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.progress.folder.mkdir(parents=True, exist_ok=True)
        spec_json = json.dumps(_spec_dict(self.spec), default=str)
        self.store.create_job(
            id=self.job_id,
            name=self.spec.name,
            kind=self.kind,
            framework=self.spec.framework,
            status="pending",
            cluster=self.cluster.name,
            source=os.path.abspath(self.spec.source) if self.spec.source else "",
            spec=spec_json,
            run_dir=str(self.run_dir),
            host=socket.gethostname(),
            driver_pid=os.getpid(),
            driver_start=process_start_time(os.getpid()),
        )
        self.store.add_event(self.job_id, "submitted", data={"tasks": len(self.request.tasks)})
        self.console.status(
            f"job {self.job_id}: {len(self.request.tasks)} tasks, run folder {self.run_dir}"
        )
        try:
            with _Signals(self._events).installed():
                return self._run()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._running is not None:
            self._running.stop(grace=self.spec.grace_period)
            self._running = None
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        if self._rendezvous_stop is not None:
            self._rendezvous_stop()
            self._rendezvous_stop = None
        close = getattr(self.cluster, "close", None)
        if callable(close):
            close()

    def _wait_for_reservation(self) -> m.Finish | None:
        last = ""
        while True:
            got = self.cluster.try_reserve(self.request)
            if not isinstance(got, Waiting):
                self._reservation = got
                return None
            if got.reason != last:
                last = got.reason
                self.console.status(f"waiting: {got.reason}")
                self.store.update_job(self.job_id, status="waiting")
                self.store.add_event(self.job_id, "waiting", data={"reason": got.reason})
            try:
                event = self._events.get(timeout=self.poll_interval)
            except queue.Empty:
                continue
            if isinstance(event, m.StopRequested):
                return m.Finish("killed", reason=event.reason)

    def _run(self) -> JobResult:
        early = self._wait_for_reservation()
        if early is not None:
            return self._finish(early)
        self.store.add_event(
            self.job_id,
            "placed",
            data={task: list(p[1]) for task, p in self._reservation_placements().items()},
        )
        pending: list[m.Event] = [m.Reserved()]
        while True:
            while pending:
                event = pending.pop(0)
                if isinstance(event, m.TaskExited):
                    self._record_exit(event)
                for instruction in self._machine.handle(event):
                    result = self._execute(instruction, pending)
                    if result is not None:
                        return result
            pending.append(self._next_event())

    def _reservation_placements(self) -> Mapping[str, tuple[str, tuple[str, ...]]]:
        assert self._reservation is not None
        return self._reservation.placements

    def _next_event(self) -> m.Event:
        while True:
            now = time.monotonic()
            deadlines = [d for d in (self._deadline, self._restart_at) if d is not None]
            if self._running is not None:
                deadlines.append(now + self.poll_interval)
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
        tasks = [launch.task_id for launch in self._plan.launches]
        rows, alive = self.progress.poll(tasks)
        if rows:
            self.store.add_metrics(self.job_id, rows)
            if self.on_metrics is not None:
                self.on_metrics(rows)
        now = time.monotonic()
        for task_id in alive:
            self._last_sign[task_id] = now
        limit = self.spec.hang_timeout
        if limit is None or self._running is None:
            return None
        attempt = self._machine.attempt
        for task_id in tasks:
            if task_id in self._machine.exits or task_id not in self._machine.tracked:
                continue
            idle = now - self._last_sign.get(task_id, self._task_started)
            if idle > limit:
                return m.TaskHung(task_id, idle, now - self._task_started, attempt)
        return None

    def _execute(self, instruction: m.Instruction, pending: list[m.Event]) -> JobResult | None:
        match instruction:
            case m.StartAttempt(attempt=attempt):
                self._start_attempt(attempt)
            case m.StopGang(reason=reason):
                if self._running is not None:
                    grace = self.spec.grace_period
                    self._running.stop(grace)
                    self._running = None
                self.store.add_event(self.job_id, "stopped", data={"reason": reason})
                # Every exit of this attempt is queued by now; GangStopped comes after them.
                self._events.put(m.GangStopped())
            case m.WaitBeforeRestart(delay=delay, restart=number, max_restarts=most):
                cause = self._root_cause(self._machine.failure)
                self.console.status(cause)
                self.console.status(
                    f"restarting the gang in {delay:g} s (restart {number} of {most})"
                )
                self.store.update_job(self.job_id, status="restarting", restarts=number)
                self.store.add_event(
                    self.job_id, "restart", data={"restart": number, "delay": delay, "cause": cause}
                )
                self._restart_at = time.monotonic() + delay
            case m.Finish():
                return self._finish(instruction)
        return None

    def _start_attempt(self, attempt: int) -> None:
        assert self._reservation is not None
        if self.spec.framework == "horovod":
            self._start_rendezvous()
        plan = build_attempt(
            self.spec,
            self.request,
            self._reservation,
            job_id=self.job_id,
            attempt=attempt,
            log_dir=str(self.log_dir),
            environ=self._task_environ(),
            rendezvous=self._rendezvous,
            progress_dir=str(self.progress.folder),
            extra_env=self._extra_env(),
        )
        self._plan = plan
        self._last_sign = {}
        self._task_started = time.monotonic()
        now = time.time()
        for launch in plan.launches:
            with open(launch.log_path, "a", encoding="utf-8") as log:
                log.write(f"{_ATTEMPT_MARK}{attempt + 1} of job {self.job_id} ===\n")
        events = self._events

        def on_exit(done: TaskExit) -> None:
            events.put(m.TaskExited(done.task_id, done.returncode, done.runtime, attempt))

        self._running = self.cluster.start(
            plan.layout, plan.launches, self.console.output, on_exit, grace=self.spec.grace_period
        )
        pids = self._running.pids()
        for slot, launch in zip(plan.layout.slots, plan.launches, strict=True):
            self.store.upsert_task(
                self.job_id,
                slot.task_id,
                attempt,
                role=slot.role,
                role_index=slot.index,
                host=slot.host,
                port=slot.port,
                gpus=",".join(slot.gpus),
                pid=pids.get(slot.task_id),
                status="running",
                started_at=now,
                log_path=launch.log_path,
            )
        if self._started is None:
            self._started = time.monotonic()
            if self.spec.timeout is not None:
                self._deadline = self._started + self.spec.timeout
            self.store.update_job(self.job_id, started_at=now)
        self.store.update_job(self.job_id, status="running", attempts=attempt + 1)
        self.store.add_event(self.job_id, "attempt_started", attempt=attempt, data=pids)
        gpus = {s.task_id: ",".join(s.gpus) for s in plan.layout.slots if s.gpus}
        extra = f", GPUs {gpus}" if gpus else ""
        self.console.status(f"attempt {attempt + 1}: started {len(plan.launches)} tasks{extra}")

    _rendezvous: str | None = None
    _kv: object = None

    def _start_rendezvous(self) -> None:
        """Horovod's Gloo rendezvous is a key-value store that the launcher serves; a restarted
        gang starts from an empty store."""
        from cauce.frameworks import _horovod_kv

        if isinstance(self._kv, _horovod_kv.HorovodKVServer):
            self._kv.clear()
            return
        server, port = _horovod_kv.start("127.0.0.1")
        self._kv = server
        self._rendezvous = f"127.0.0.1:{port}"
        self._rendezvous_stop = lambda: _horovod_kv.stop(server)

    def _record_exit(self, event: m.TaskExited) -> None:
        status = "succeeded" if event.returncode == 0 else "failed"
        if event.attempt == self._machine.attempt and self._machine.phase is not m.Phase.RUNNING:
            status = "stopped" if event.returncode != 0 else status
        self.store.upsert_task(
            self.job_id,
            event.task_id,
            event.attempt,
            status=status,
            exit_code=event.returncode,
            ended_at=time.time(),
        )
        self.store.add_event(
            self.job_id,
            "task_exited",
            task_id=event.task_id,
            attempt=event.attempt,
            data={"returncode": event.returncode, "runtime": round(event.runtime, 3)},
        )

    def _log_path(self, task_id: str) -> str:
        return str(self.log_dir / f"{task_id}.log")

    def _root_cause(self, failure: m.Failure | None) -> str:
        if failure is None:
            return ""
        path = self._log_path(failure.task_id)
        tail = log_tail(path)
        if failure.returncode is None:
            head = (
                f"{failure.task_id} hung first (no report or heartbeat for "
                f"{failure.hung_for or 0:.0f} s, hang_timeout {self.spec.hang_timeout:g} s, "
                f"after {failure.runtime:.1f} s, attempt {failure.attempt + 1})"
            )
        else:
            head = (
                f"{failure.task_id} failed first ({describe_exit(failure.returncode)} after "
                f"{failure.runtime:.1f} s, attempt {failure.attempt + 1})"
            )
        if not tail:
            return f"{head}; its log is empty ({path})"
        body = "\n".join(f"    {line}" for line in tail)
        return f"{head}; last lines of its log ({path}):\n{body}"

    def _finish(self, finish: m.Finish) -> JobResult:
        self._poll_progress()  # the last reports of the last attempt
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        cause = self._root_cause(finish.failure) if finish.failure else finish.reason
        attempts = self._machine.attempt + 1
        self.store.update_job(
            self.job_id,
            status=finish.status,
            ended_at=time.time(),
            root_cause=cause or None,
            restarts=self._machine.restarts,
            attempts=attempts,
        )
        self.store.add_event(self.job_id, "finished", data={"status": finish.status})
        return JobResult(
            job_id=self.job_id,
            status=finish.status,
            root_cause=cause,
            attempts=attempts,
            restarts=self._machine.restarts,
            run_dir=str(self.run_dir),
        )


def _spec_dict(spec: JobSpec) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(spec)
