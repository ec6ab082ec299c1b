"""The driver's end of the tasks' connections, for one attempt of a gang on Spark.

A TCP server on the driver; each barrier task connects once (``_wire`` has the protocol).
Output lines go to the console sink and the task's log, progress lines to the task's progress file
in the run folder, exits to ``on_exit`` (exactly once per task, whoever reports it first: the task,
a lost connection, or the end of the Spark job).

Liveness (:meth:`TaskLinks.check_links`, called every tick): the driver pings every connected
task and hears its pings; a task silent for ``link_timeout`` seconds is lost, and with it every
task on its host (a host cut off the network, its executor frozen): each gets the exit
:data:`LOST` with its real runtime and a line in its log naming the host and its tasks.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from cauce.cluster.api import OutputSink, TaskExit, TaskLaunch, TaskPlace
from cauce.cluster.spark._wire import PING, Acceptor, Channel, keep_alive, ping_interval

__all__ = ["DEFAULT_LINK_TIMEOUT", "LOST", "TaskLinks"]

logger = logging.getLogger(__name__)

#: Exit status of a task whose command's end was never reported (executor lost, not placed).
LOST = 255
_TICK = 0.2
_HELLO_TIMEOUT = 30.0
#: Seconds of silence after which a task's link is gone (``spark.cauce.linkTimeout``).
DEFAULT_LINK_TIMEOUT = 20.0


@dataclass
class _Task:
    launch: TaskLaunch
    log: IO[bytes]
    progress: IO[bytes] | None = None
    channel: Channel | None = None
    thread: threading.Thread | None = None
    pid: int | None = None
    started: float | None = None  # driver's monotonic time of the command's start
    pinged: float = 0.0  # driver's monotonic time of the last ping sent
    exited: bool = False
    control_sent: bool = False
    place: TaskPlace | None = None  # where the task says it runs


class TaskLinks:
    """The server and what each task of the attempt said. Thread-safe."""

    def __init__(
        self,
        launches: Sequence[TaskLaunch],
        bind_host: str,
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        *,
        link_timeout: float = DEFAULT_LINK_TIMEOUT,
    ) -> None:
        self._on_output = on_output
        self.link_timeout = link_timeout
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.token = secrets.token_hex(16)
        #: Set once the gang is being stopped: late connections are refused, silent ends are
        #: stops rather than losses.
        self.stopping = threading.Event()
        self._closed = threading.Event()
        self._lost = threading.Event()
        self._tasks: dict[str, _Task] = {}
        for launch in launches:
            os.makedirs(os.path.dirname(launch.log_path) or ".", exist_ok=True)
            log = open(launch.log_path, "ab")  # noqa: SIM115 - closed by close()
            self._tasks[launch.task_id] = _Task(launch, log)
        self._acceptor = Acceptor(
            bind_host, self._accept, name="cauce-spark-accept", backlog=len(launches) + 8
        )
        self.port: int = self._acceptor.port

    # --- state -------------------------------------------------------------------------------

    def not_started(self) -> list[str]:
        with self._lock:
            return [t for t, s in self._tasks.items() if s.started is None and not s.exited]

    def unreported(self) -> list[str]:
        with self._lock:
            return [t for t, s in self._tasks.items() if not s.exited]

    def pids(self) -> dict[str, int]:
        with self._lock:
            return {t: s.pid for t, s in self._tasks.items() if s.pid is not None}

    def places(self) -> dict[str, TaskPlace]:
        with self._lock:
            return {t: s.place for t, s in self._tasks.items() if s.place is not None}

    def wait_connected_exits(self, deadline: float) -> bool:
        """Wait until every task that connected has reported its exit; True if all tasks did."""
        with self._lock:
            while not all(s.exited or s.channel is None for s in self._tasks.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, _TICK))
            return all(s.exited for s in self._tasks.values())

    def join_readers(self, timeout: float) -> None:
        for state in list(self._tasks.values()):
            if state.thread is not None:
                state.thread.join(timeout=timeout)

    # --- to the tasks ------------------------------------------------------------------------

    def send_stop(self, grace: float) -> None:
        with self._lock:
            channels = [s.channel for s in self._tasks.values() if s.channel and not s.exited]
        for channel in channels:
            channel.send({"stop": grace})

    def relay_control(self) -> None:
        """``ask_to_stop`` writes the driver's control file; each task gets its text once."""
        with self._lock:
            live = [s for s in self._tasks.values() if s.channel and not s.exited]
        for state in live:
            path = state.launch.env.get("CAUCE_CONTROL_FILE")
            if state.control_sent or state.channel is None or not path:
                continue
            try:
                with open(path, encoding="utf-8") as file:
                    reason = file.read().strip()
            except OSError:
                continue
            state.control_sent = state.channel.send({"ctl": reason})

    # --- from the tasks ----------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        threading.Thread(target=self._serve, args=(Channel(sock),), daemon=True).start()

    def _serve(self, channel: Channel) -> None:
        channel.sock.settimeout(_HELLO_TIMEOUT)  # a peer that says nothing is not a task
        hello = channel.receive() or {}
        channel.sock.settimeout(None)
        task_id = str(hello.get("task", ""))
        with self._lock:
            state = self._tasks.get(task_id)
            late = self.stopping.is_set() or self._closed.is_set()
            ok = (
                hello.get("hello") == self.token
                and state is not None
                and state.channel is None
                and not state.exited
                and not late
            )
            if ok and state is not None:
                state.channel, state.thread = channel, threading.current_thread()
        if not ok or state is None:
            channel.send({"ok": False, "why": "not a task of this attempt, or a Spark retry"})
            channel.close()
            return
        keep_alive(channel.sock, self.link_timeout)
        channel.send({"ok": True})
        while (message := channel.receive()) is not None:
            self._handle(state, message)
        channel.close()
        if state.started is not None and not state.exited and not self.stopping.is_set():
            why = "its link closed without an exit (its executor or Python worker died)"
            self.lose(task_id, why)

    def _handle(self, state: _Task, message: dict[str, Any]) -> None:
        task_id = state.launch.task_id
        if "o" in message:
            line = str(message["o"])
            self.write(task_id, line)
            try:
                self._on_output(task_id, line)
            except Exception:
                logger.exception("output sink failed for %s", task_id)
        elif "p" in message:
            self._progress(state, str(message["p"]))
        elif "started" in message:
            with self._lock:
                state.pid, state.started = int(message["started"]), time.monotonic()
                state.place = _place(message)
                self._changed.notify_all()
            gpus = ",".join(str(g) for g in message.get("gpus", [])) or "-"
            self.write(
                task_id,
                f"cauce: {task_id} runs on {message.get('host')} port {message.get('port')} "
                f"gpus {gpus} (pid {state.pid} there)",
            )
        elif "exit" in message:
            self.exit(task_id, int(message["exit"]), float(message.get("runtime", 0.0)))

    # --- liveness ----------------------------------------------------------------------------

    def check_links(self) -> None:
        """Ping the connected tasks that are due; a task silent past the link timeout is lost,
        with every other task on its host."""
        now = time.monotonic()
        every = ping_interval(self.link_timeout)
        with self._lock:
            live = [s for s in self._tasks.values() if s.channel is not None and not s.exited]
        for state in live:
            assert state.channel is not None
            silent = now - state.channel.last_heard
            if silent > self.link_timeout and not self.stopping.is_set():
                why = f"no word from it for {silent:.0f} s (link timeout {self.link_timeout:g} s)"
                self.lose(state.launch.task_id, why)
            elif now - state.pinged >= every:
                state.pinged = now
                state.channel.send(PING)

    def runtime(self, task_id: str) -> float:
        """Seconds since the task's command started (0 if it never did)."""
        started = self._tasks[task_id].started
        return 0.0 if started is None else time.monotonic() - started

    def lost(self) -> bool:
        """True once a task of this attempt was declared lost."""
        return self._lost.is_set()

    def lose(self, task_id: str, why: str) -> None:
        """``task_id`` is gone: a line in its log (``worker-1 on host 10.0.0.12 lost: WHY;
        tasks on that host: worker-1``), the exit :data:`LOST` with its real runtime, and its
        link closed. Other tasks on that host are lost by their own silence, if they are."""
        with self._lock:
            state = self._tasks[task_id]
            host = state.place.host if state.place is not None else ""
            names = ", ".join(
                t
                for t, s in self._tasks.items()
                if s is state or (host and s.place is not None and s.place.host == host)
            )
        where = f" on host {host}" if host else ""
        self._lost.set()
        note = f"cauce: {task_id}{where} lost: {why}; tasks on that host: {names}"
        self.exit(task_id, LOST, self.runtime(task_id), note)
        if state.channel is not None:
            state.channel.close()

    def write(self, task_id: str, line: str) -> None:
        """A line in the task's log."""
        state = self._tasks[task_id]
        with self._lock:
            if not state.log.closed:
                state.log.write(line.encode("utf-8", errors="replace") + b"\n")
                state.log.flush()

    def _progress(self, state: _Task, line: str) -> None:
        path = state.launch.env.get("CAUCE_PROGRESS_FILE")
        if not path:
            return
        with self._lock:
            if self._closed.is_set():
                return
            if state.progress is None:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                state.progress = open(path, "ab")  # noqa: SIM115 - closed by close()
            state.progress.write(line.encode("utf-8") + b"\n")
            state.progress.flush()

    def exit(self, task_id: str, code: int, runtime: float, note: str = "") -> None:
        """Report the task's exit, once; ``note`` goes to its log first."""
        state = self._tasks[task_id]
        with self._lock:
            if state.exited:
                return
            state.exited = True
            self._changed.notify_all()
        if note:
            self.write(task_id, note)
        try:
            self._on_exit(TaskExit(task_id, code, runtime))
        except Exception:
            logger.exception("on_exit failed for %s", task_id)

    def close(self) -> None:
        self._closed.set()
        self._acceptor.close()
        with self._lock:
            for state in self._tasks.values():
                if state.channel is not None:
                    state.channel.close()
                state.log.close()
                if state.progress is not None:
                    state.progress.close()


def _place(started: dict[str, Any]) -> TaskPlace:
    """The ``started`` message of a task as where it runs."""
    gpus = tuple(str(g) for g in started.get("gpus", []))
    return TaskPlace(
        str(started.get("host", "")), int(started.get("port", 0)), gpus, int(started["started"])
    )
