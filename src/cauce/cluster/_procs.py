"""Processes of a gang on this host: one process group per task, output to a log and a sink."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from cauce._util.procs import all_pids, proc_stat
from cauce._util.pycommand import PYTHON_FORMS, python_command
from cauce.cluster._reaper import group_alive
from cauce.cluster._warm import STACKS_SIGNAL, WarmProcess, WarmStartError, WarmStarts
from cauce.cluster.api import OutputSink, RunningGang, TaskExit, TaskLaunch, TaskProcesses

__all__ = ["LocalGang", "Reaper"]

logger = logging.getLogger(__name__)


class Reaper:
    """Starts and feeds the watchdog of ``_reaper.py``; see there. Thread-safe."""

    def __init__(self, grace: float) -> None:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reaper.py")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", script, f"{grace:g}"],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._channel: socket.socket | None = mine
        self._lock = threading.Lock()

    def _send(self, text: str, fds: Sequence[int] = ()) -> None:
        with self._lock:
            if self._channel is None:
                return
            try:
                socket.send_fds(self._channel, [os.fsencode(text)], list(fds))
            except OSError:
                logger.warning("the reaper of this job has gone; tasks may outlive a crash")

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def unwatch(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def hold(self, key: str, fds: Sequence[int]) -> None:
        """Let the reaper hold these open lock files (GPU leases) too: if the driver dies, they
        stay locked until every watched task is gone. :meth:`drop` once they are released."""
        self._send(f"L{key}", fds)

    def drop(self, key: str) -> None:
        self._send(f"U{key}")

    def scratch(self, folder: str | os.PathLike[str]) -> None:
        """Remove ``folder`` (and what is in it) when the reaper ends: once the tasks are gone,
        also when this process was killed before it could remove it itself."""
        self._send(f"R{os.fspath(folder)}")

    def close(self) -> None:
        """Let the reaper exit (it reaps whatever is still listed, normally nothing)."""
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _start(launch: TaskLaunch, warm: WarmStarts) -> subprocess.Popen[bytes] | WarmProcess:
    """The task's process: forked by a zygote when the job preloads modules, else started."""
    if launch.preload:
        command = python_command(launch.argv)
        if command is None:
            raise WarmStartError(f"preload needs a command of the form {PYTHON_FORMS}")
        return warm.spawn(launch, command)
    return subprocess.Popen(
        list(launch.argv),
        cwd=launch.cwd,
        env=dict(launch.env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class _Task:
    def __init__(
        self,
        launch: TaskLaunch,
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        reaper: Reaper,
        warm: WarmStarts,
    ) -> None:
        self.launch = launch
        self.started = time.monotonic()
        os.makedirs(os.path.dirname(launch.log_path) or ".", exist_ok=True)
        self.log = open(launch.log_path, "ab")  # noqa: SIM115 - closed by the reader thread
        self.returncode: int | None = None
        self._on_output = on_output
        self._on_exit = on_exit
        try:
            self.proc: subprocess.Popen[bytes] | WarmProcess | None = _start(launch, warm)
        except (OSError, WarmStartError) as exc:
            # A task that cannot start is a failed task (exit 127, as a shell says), not a
            # crash of the driver: the gang is stopped and the reason is in its log.
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            message = f"cauce: cannot start {launch.argv[0]!r} in {launch.cwd!r}: {reason}"
            self.log.write(message.encode() + b"\n")
            self.log.close()
            self.proc, self.pgid = None, -1
            on_output(launch.task_id, message)
            self._waiter = threading.Thread(
                target=on_exit, args=(TaskExit(launch.task_id, 127, 0.0),), daemon=True
            )
            self._waiter.start()
            return
        except BaseException:
            self.log.close()
            raise
        self.pgid = self.proc.pid
        reaper.watch(self.pgid)
        self._reader = threading.Thread(
            target=self._read, name=f"cauce-out-{launch.task_id}", daemon=True
        )
        self._waiter = threading.Thread(
            target=self._wait, name=f"cauce-wait-{launch.task_id}", daemon=True
        )
        self._reader.start()
        self._waiter.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stream = self.proc.stdout
        try:
            for raw in stream:
                self.log.write(raw)
                self.log.flush()
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                try:
                    self._on_output(self.launch.task_id, text)
                except Exception:
                    logger.exception("output sink failed for %s", self.launch.task_id)
        finally:
            stream.close()
            self.log.close()

    def _wait(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        runtime = time.monotonic() - self.started
        # The reader ends at EOF; a grandchild may keep the pipe open, so do not wait forever.
        self._reader.join(timeout=2.0)
        self.returncode = code
        self._on_exit(TaskExit(self.launch.task_id, code, runtime))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.pgid <= 0:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def join(self, timeout: float | None = None) -> None:
        self._waiter.join(timeout)


class LocalGang(RunningGang):
    def __init__(
        self,
        launches: Sequence[TaskLaunch],
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        reaper: Reaper,
        warm: WarmStarts,
    ) -> None:
        self._reaper = reaper
        self._tasks: list[_Task] = []
        try:
            for launch in launches:
                self._tasks.append(_Task(launch, on_output, on_exit, reaper, warm))
        except BaseException:
            self.stop(grace=0.0)
            raise

    def pids(self) -> dict[str, int]:
        return {t.launch.task_id: t.proc.pid for t in self._tasks if t.proc is not None}

    def show_stacks(self, task_id: str) -> bool:
        for task in self._tasks:
            if task.launch.task_id == task_id and isinstance(task.proc, WarmProcess):
                with contextlib.suppress(ProcessLookupError):
                    if task.alive():
                        os.kill(task.proc.pid, STACKS_SIGNAL)
                        return True
        return False

    def probe(self) -> dict[str, TaskProcesses]:
        leaders = {t.pgid: t.launch.task_id for t in self._tasks if t.alive()}
        states: dict[int, list[str]] = {pgid: [] for pgid in leaders}
        ticks = dict.fromkeys(leaders, 0)
        main: dict[int, str] = {}
        for pid in all_pids():  # one pass over /proc for every group
            stat = proc_stat(pid)
            if stat is None or stat.pgid not in leaders or stat.state == "Z":
                continue
            states[stat.pgid].append(stat.state)
            ticks[stat.pgid] += stat.cpu_ticks
            if pid == stat.pgid:
                main[pid] = stat.state
        per_second = os.sysconf("SC_CLK_TCK")
        found: dict[str, TaskProcesses] = {}
        for pgid, task_id in leaders.items():
            seen = states[pgid]
            if not seen:
                continue  # gone meanwhile
            if "T" in seen or "t" in seen:
                state = "T"
            elif "D" in seen:
                state = "D"
            else:
                state = main.get(pgid, seen[0])
            found[task_id] = TaskProcesses(state, ticks[pgid] / per_second)
        return found

    def stop(self, grace: float) -> None:
        for task in self._tasks:
            if task.alive():
                task.signal_group(signal.SIGTERM)
                task.signal_group(signal.SIGCONT)  # a stopped task gets SIGTERM once continued
        deadline = time.monotonic() + grace
        for task in self._tasks:
            task.join(max(0.0, deadline - time.monotonic()))
        # Whatever is left, leaders or their children in the same group, gets SIGKILL.
        for task in self._tasks:
            if task.alive() or (task.pgid > 0 and group_alive(task.pgid)):
                task.signal_group(signal.SIGKILL)
        for task in self._tasks:
            task.join()
            if task.pgid <= 0:
                continue
            end = time.monotonic() + 5.0
            while group_alive(task.pgid) and time.monotonic() < end:
                time.sleep(0.02)
            self._reaper.unwatch(task.pgid)
