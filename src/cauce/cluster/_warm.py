"""Warm starts of a job's Python tasks on this host (``preload:`` in the job spec): a zygote
(``_zygote.py``) imports the modules once and forks each task, which then skips those imports.
One zygote per interpreter, module list, working folder and import-time environment, kept by the
local cluster for its lifetime (a ``cauce tune`` study reuses it for every trial) and closed with
it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from cauce._util.pycommand import PythonCommand, python_command
from cauce.cluster.api import TaskLaunch

__all__ = ["STACKS_SIGNAL", "WarmProcess", "WarmStartError", "WarmStarts"]

#: A warm task prints every thread's stack to its output when it gets this signal (faulthandler).
STACKS_SIGNAL = signal.SIGUSR2

logger = logging.getLogger(__name__)

_ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote.py")
#: Variables that change what an import finds or does; a zygote serves tasks that agree on them.
_IMPORT_ENV = ("PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "LD_LIBRARY_PATH")
#: How long the imports may take (TensorFlow on a loaded host takes tens of seconds).
READY_TIMEOUT = 300.0
#: How long a fork may take (milliseconds normally; a zygote that does not answer is stuck).
FORK_TIMEOUT = 60.0
_MAX_MESSAGE = 1 << 20


class WarmStartError(Exception):
    """A zygote could not be started or could not import a module of ``preload:``."""


class WarmProcess:
    """A task forked by a zygote, as much of ``subprocess.Popen`` as the local gang uses. Its
    exit status comes from the zygote, its parent."""

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._ended = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def ended(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._ended.set()


class _Zygote:
    def __init__(self, interpreter: str, preload: tuple[str, ...], launch: TaskLaunch) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [interpreter, _ZYGOTE, *preload],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=launch.cwd,
                env=dict(launch.env),
                start_new_session=True,
            )
        except OSError as exc:
            mine.close()
            raise WarmStartError(f"cannot start {interpreter}: {exc.strerror}") from None
        finally:
            theirs.close()
        self._channel = mine
        self._lock = threading.Lock()
        self._ids = 0
        self._asked: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._tasks: dict[int, WarmProcess] = {}
        self._early: dict[int, int] = {}
        self._gone = False
        try:
            mine.settimeout(READY_TIMEOUT)
            first = self._receive()
            mine.settimeout(None)
        except (OSError, ValueError) as exc:
            first = {"error": f"no answer ({exc})"}
        if not first.get("ready"):
            self.close()
            names = ", ".join(preload)
            raise WarmStartError(
                f"could not import preload modules ({names}) with {interpreter} in "
                f"{launch.cwd}: {first.get('error') or 'it exited'}; fix the name in preload:, "
                "or install the module"
            )
        self._reader = threading.Thread(target=self._read, name="cauce-zygote", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self._gone

    def _receive(self) -> dict[str, Any]:
        message = self._channel.recv(_MAX_MESSAGE)
        if not message:
            raise ValueError("it exited")
        found: dict[str, Any] = json.loads(message)
        return found

    def _read(self) -> None:
        try:
            while True:
                message = self._receive()
                if "id" in message:
                    with self._lock:
                        asked = self._asked.pop(message["id"], None)
                    if asked is not None:
                        asked[1].append(message)
                        asked[0].set()
                    elif "pid" in message:  # forked after its caller gave up waiting
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(message["pid"], signal.SIGKILL)
                else:
                    with self._lock:
                        task = self._tasks.pop(message["pid"], None)
                        if task is None:  # it ended before track() heard of it
                            self._early[message["pid"]] = int(message["exit"])
                    if task is not None:
                        task.ended(int(message["exit"]))
        except (OSError, ValueError):
            pass
        self._lost()

    def _lost(self) -> None:
        """The zygote is gone: nothing will report its tasks' ends, so they are stopped now
        and end as killed; requests still waiting fail."""
        with self._lock:
            self._gone = True
            tasks, self._tasks = self._tasks, {}
            asked, self._asked = self._asked, {}
        for event, _box in asked.values():
            event.set()
        for task in tasks.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(task.pid, signal.SIGKILL)
            logger.error("the warm-start process of task pid %d exited; it was stopped", task.pid)
            task.ended(-signal.SIGKILL)

    def spawn(self, command: PythonCommand, launch: TaskLaunch, output: int) -> int:
        event, box = threading.Event(), list[dict[str, Any]]()
        with self._lock:
            if self._gone:
                raise WarmStartError("the warm-start process has exited")
            self._ids += 1
            ident = self._ids
            self._asked[ident] = (event, box)
        request = {
            "id": ident,
            "kind": command.kind,
            "target": command.target,
            "args": list(command.args),
            "unbuffered": command.unbuffered,
            "cwd": launch.cwd,
            "env": dict(launch.env),
        }
        try:
            socket.send_fds(self._channel, [json.dumps(request).encode()], [output])
        except OSError as exc:
            with self._lock:
                self._asked.pop(ident, None)
            raise WarmStartError(f"the warm-start process is unreachable: {exc}") from None
        if not event.wait(FORK_TIMEOUT):
            with self._lock:
                self._asked.pop(ident, None)
            raise WarmStartError(
                f"the warm-start process did not fork the task within {FORK_TIMEOUT:g} s"
            )
        if not box or "pid" not in box[0]:
            reason = box[0].get("error") if box else "it exited"
            raise WarmStartError(f"the warm-start process could not fork the task: {reason}")
        return int(box[0]["pid"])

    def track(self, task: WarmProcess) -> None:
        """Report ``task``'s end to it; if it ended already, its end is in the queue."""
        with self._lock:
            early = self._early.pop(task.pid, None)
            lost = self._gone and early is None
            if early is None and not lost:
                self._tasks[task.pid] = task
        if early is not None:
            task.ended(early)
        elif lost:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(task.pid, signal.SIGKILL)
            task.ended(-signal.SIGKILL)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)
        self._channel.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class WarmStarts:
    """The zygotes of one cluster; thread-safe."""

    def __init__(self) -> None:
        self._zygotes: dict[tuple[Any, ...], _Zygote] = {}
        self._starting: dict[tuple[Any, ...], threading.Event] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _zygote(self, launch: TaskLaunch, command: PythonCommand) -> _Zygote:
        """The zygote for ``launch``, started now (its imports waited for) if there is none yet
        for its interpreter, modules, folder and import environment. While one key's zygote
        imports, tasks of other keys are served: only those of the same key wait for it."""
        interpreter = _which(command.interpreter, launch.env)
        key = (
            interpreter,
            launch.preload,
            launch.cwd,
            tuple(launch.env.get(name) for name in _IMPORT_ENV),
        )
        while True:
            with self._lock:
                if self._closed:
                    raise WarmStartError("the warm starts are closed")
                zygote = self._zygotes.get(key)
                if zygote is not None and zygote.alive:
                    return zygote
                if zygote is not None:
                    del self._zygotes[key]
                    zygote.close()
                starting = self._starting.get(key)
                if starting is None:
                    starting = self._starting[key] = threading.Event()
                    break
            starting.wait()  # another thread starts it: look again when it is done
        began = time.monotonic()
        try:
            zygote = _Zygote(interpreter, launch.preload, launch)
        except BaseException:
            with self._lock:
                del self._starting[key]
            starting.set()
            raise
        with self._lock:
            del self._starting[key]
            closed = self._closed
            if not closed:
                self._zygotes[key] = zygote
        if closed:  # close() waits for this one: stop it before saying it is done
            zygote.close()
        starting.set()
        if closed:
            raise WarmStartError("the warm starts are closed")
        logger.info(
            "warm start: imported %s in %.1f s",
            ", ".join(launch.preload),
            time.monotonic() - began,
        )
        return zygote

    def prestart(self, launches: Sequence[TaskLaunch]) -> None:
        """Start the zygotes that these launches will ask for, before they do (a task that asks
        meanwhile waits for its zygote's imports, as it would have anyway). What cannot start
        is left to the task's own spawn, which raises it; a command that is not ``python ...``
        is skipped."""
        for launch in launches:
            command = python_command(launch.argv)
            if command is None or not launch.preload:
                continue
            try:
                self._zygote(launch, command)
            except WarmStartError as exc:
                logger.debug("warm start: not started early: %s", exc)

    def spawn(self, launch: TaskLaunch, command: PythonCommand) -> WarmProcess:
        """Fork ``launch``'s task from a zygote that has imported ``launch.preload`` (started
        now if there is none yet for it). Raises :class:`WarmStartError`."""
        zygote = self._zygote(launch, command)
        read, write = os.pipe()
        try:
            pid = zygote.spawn(command, launch, write)
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        task = WarmProcess(pid, open(read, "rb"))  # noqa: SIM115 - the task's reader closes it
        zygote.track(task)
        return task

    def close(self) -> None:
        """Stop every zygote; one still importing is stopped when its imports end (waited for
        here, so that nothing outlives this call)."""
        with self._lock:
            self._closed = True
            zygotes, self._zygotes = list(self._zygotes.values()), {}
            starting = list(self._starting.values())
        for zygote in zygotes:
            zygote.close()
        for event in starting:
            event.wait()


def _which(interpreter: str, env: Mapping[str, str]) -> str:
    found = shutil.which(interpreter, path=env.get("PATH"))
    if found is None:
        raise WarmStartError(f"{interpreter!r} is not on the task's PATH")
    return found
