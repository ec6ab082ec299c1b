"""Reusable trial workers (``tune.entrypoint: module:function`` on the local cluster): a pool of
worker processes (``cauce.runtime._worker``) that imported the trial's module once, and a
cluster whose single-task gangs run in them instead of in fresh processes.

Each trial is still a job of its own, with its driver, history rows, log, progress file and
control file: only the process is reused. A worker that a trial crashed, or that the trial left
unclean (it failed, or left threads or child processes), is retired, and the pool starts another
at once, so the next trial finds one ready. Workers are watched by the pool's reaper like any
task, so none outlives the tuner; an idle worker also exits when the pool's end of its socket
closes.

Threads: :meth:`WorkerPool.take` and :meth:`WorkerPool.give_back` are called from the trials'
driver threads, :meth:`WorkerPool.close` from the tuner's; the pool's lists are behind a lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cauce.cluster import Reaper, group_alive
from cauce.cluster.api import (
    Cluster,
    DriverAddress,
    GangRequest,
    HostCapacity,
    OutputSink,
    Reservation,
    RunningGang,
    TaskExit,
    TaskLaunch,
    Waiting,
)
from cauce.errors import ClusterError
from cauce.frameworks.api import GangLayout

__all__ = ["PooledCluster", "WorkerPool"]

logger = logging.getLogger(__name__)

_READY_TIMEOUT = 300.0  # seconds a worker may take to import the trial's module
_POLL = 0.5  # seconds between checks that a silent worker is still alive
_FAILED_STARTS = 2  # workers in a row that die before they are ready: the module cannot load


class _Worker:
    """One worker process and the pool's end of its socket."""

    def __init__(self, entrypoint: str, cwd: str, env: Mapping[str, str], log: Path) -> None:
        self.log = log
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with open(log, "ab") as err:  # what it says outside a trial (a crash at import)
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cauce.runtime._worker",
                        "--fd",
                        str(theirs.fileno()),
                        entrypoint,
                    ],
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.channel = mine
        self._in = mine.makefile("rb")
        self._ready = threading.Event()
        self._kill_lock = threading.Lock()
        self._killed = False
        self.ok = True

    def wait_ready(self, timeout: float) -> bool:
        if not self._ready.is_set():
            said = self._says(time.monotonic() + timeout)
            self.ok = said and self._read() == {"ready": True}
            self._ready.set()
        return self.ok

    def _says(self, deadline: float | None = None) -> bool:
        """Wait until the worker writes (or closes its end); False if it died meanwhile or the
        deadline passed. Its death is seen by polling it, not only by the end of its socket:
        a child that a trial forked holds the socket open after the worker is gone."""
        while deadline is None or time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([self.channel], [], [], _POLL)
            except (OSError, ValueError):  # closed: killed meanwhile
                return False
            if readable:
                return True
            if self.proc.poll() is not None:
                return False
        return False

    def failure(self, entrypoint: str) -> str:
        """Why the worker died before it was ready: its exit code and its last words."""
        code = self.proc.wait()
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        said = " | ".join(line.strip() for line in lines[-5:] if line.strip())
        return (
            f"worker for {entrypoint} exited with code {code} while importing: "
            f"{said or '(it said nothing)'} (log {self.log})"
        )

    def _read(self) -> dict[str, object] | None:
        try:
            line = self._in.readline()
        except OSError:
            return None
        if not line:
            return None
        message = json.loads(line)
        return message if isinstance(message, dict) else None

    def run(self, launch: TaskLaunch, grace: float) -> tuple[int, bool]:
        """Run one trial: (its exit code, whether the worker may run another)."""
        job = {"env": dict(launch.env), "cwd": launch.cwd, "log": launch.log_path}
        with contextlib.suppress(OSError):  # a worker that died says so at the read
            self.channel.sendall(json.dumps(job).encode() + b"\n")
        answer = self._read() if self._says() else None
        if answer is None or not isinstance(answer.get("exit"), int):
            self.kill(grace)  # it died: the trial's children go with it
            return self.proc.wait(), False  # its exit code or signal is the trial's
        code = answer["exit"]
        assert isinstance(code, int)
        return code, not answer.get("retire", True)

    def kill(self, grace: float) -> None:
        """End the worker and whatever it started (its process group). Once: a second call
        (the pool retiring a worker that a stop killed) waits for the first and signals
        nothing, since the group's id may by then be another process's."""
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
            self.ok = False
            with contextlib.suppress(OSError):
                self.channel.shutdown(socket.SHUT_RDWR)
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, sig)
                end = time.monotonic() + wait
                while group_alive(self.pid) and time.monotonic() < end:
                    time.sleep(0.02)
                if not group_alive(self.pid):
                    break
            self.proc.wait()
            self.channel.close()


class WorkerPool:
    def __init__(
        self,
        entrypoint: str,
        *,
        cwd: str,
        env: Mapping[str, str],
        size: int,
        grace: float,
        log_dir: Path,
    ) -> None:
        self.entrypoint = entrypoint
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self.cwd = cwd
        self.env = dict(env)
        self.size = size
        self.grace = grace
        self._reaper = Reaper(grace=grace)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._closed = False
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> _Worker | None:
        with self._lock:
            if self._closed:
                return None
            self._count += 1
            log = self.log_dir / f"worker-{self._count}.log"
            worker = _Worker(self.entrypoint, self.cwd, self.env, log)
            self._reaper.watch(worker.pid)
            self._all.append(worker)
            self._idle.append(worker)
            return worker

    def take(self) -> _Worker:
        """An idle worker whose module is imported (a new one if none is idle); ClusterError
        when workers in a row die before they are ready (the module cannot be imported)."""
        failed = 0
        while True:
            with self._lock:
                worker = self._idle.pop(0) if self._idle else None
            if worker is None:
                spawned = self._spawn()
                if spawned is None:
                    raise RuntimeError("the worker pool is closed")
                continue
            if worker.wait_ready(_READY_TIMEOUT):
                return worker
            self._retire(worker)  # it could not even start
            failed += 1
            if failed >= _FAILED_STARTS:
                raise ClusterError(worker.failure(self.entrypoint))

    def give_back(self, worker: _Worker, reusable: bool) -> None:
        if reusable and worker.ok:
            with self._lock:
                if not self._closed:
                    self._idle.append(worker)
                    return
        self._retire(worker)
        self._spawn()  # ready for the next trial before it asks

    def _retire(self, worker: _Worker) -> None:
        worker.kill(self.grace)
        self._reaper.unwatch(worker.pid)
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
        for worker in workers:
            self._retire(worker)
        with contextlib.suppress(OSError):
            self._reaper.close()


class _WorkerGang(RunningGang):
    """A single-task gang running in a pooled worker."""

    def __init__(
        self, pool: WorkerPool, launch: TaskLaunch, on_exit: Callable[[TaskExit], None]
    ) -> None:
        self._pool = pool
        self._launch = launch
        self._on_exit = on_exit
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._ended = False  # the trial's call returned: the worker may be another trial's
        self._worker = pool.take()
        self._thread = threading.Thread(
            target=self._main, name=f"cauce-worker-{launch.task_id}", daemon=True
        )
        self._thread.start()

    def _main(self) -> None:
        code, reusable = self._worker.run(self._launch, self._pool.grace)
        with self._lock:
            self._ended = True
        runtime = time.monotonic() - self._started
        try:
            self._on_exit(TaskExit(self._launch.task_id, code, runtime))
        finally:
            self._pool.give_back(self._worker, reusable)

    def pids(self) -> dict[str, int]:
        return {self._launch.task_id: self._worker.pid}

    def stop(self, grace: float) -> None:
        with self._lock:  # held while killing: once ended, the worker may be another trial's
            if not self._ended:
                self._worker.kill(grace)  # a trial cannot be stopped but with its worker
        self._thread.join()


class PooledCluster(Cluster):
    """The local cluster ``inner``, whose gangs of one task run in ``pool``'s workers."""

    def __init__(self, inner: Cluster, pool: WorkerPool) -> None:
        self.inner = inner
        self.pool = pool
        self.name = inner.name

    def describe(self) -> list[HostCapacity]:
        return self.inner.describe()

    def check(self, request: GangRequest) -> None:
        self.inner.check(request)

    def try_reserve(self, request: GangRequest) -> Reservation | Waiting:
        return self.inner.try_reserve(request)

    def driver_address(self) -> DriverAddress:
        return self.inner.driver_address()

    def start(
        self,
        layout: GangLayout,
        launches: Sequence[TaskLaunch],
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        *,
        grace: float = 10.0,
    ) -> RunningGang:
        if len(launches) != 1:
            return self.inner.start(layout, launches, on_output, on_exit, grace=grace)
        return _WorkerGang(self.pool, launches[0], on_exit)

    def close(self) -> None:
        self.inner.close()  # the pool is its owner's (the tuner's) to close
