"""What runs on an executor: one barrier task of a gang, which runs one task's command.

Every barrier task of the stage says hello to the driver, picks its address and a free port and
reads its GPUs from Spark (``TaskContext.resources()``), then ``allGather`` gives every task the
whole layout, from which it computes its own env contract with the same pure function as the
local cluster (``cauce.frameworks.task_env``). The command then runs as a child in its own
process group, watched by a reaper that kills the group when this Python worker dies (a cancelled
Spark job kills it). Its output, its progress lines and its exit go to the driver over the
connection (``_wire``); a user failure is an exit code, never a Spark task failure, so
Spark never retries a gang behind cauce's back.

The link to the driver is watched both ways: the task pings the driver every few seconds from
its hello on, and once its command runs, a driver silent for the link timeout (a cut network, a
frozen driver host) or a closed link (a killed driver) stops the command's process group
(SIGTERM, grace, SIGKILL). Output that can no longer reach the driver goes to this Python
worker's stderr, which is the executor's log on this host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from cauce.cluster._ports import free_ports
from cauce.cluster._procs import Reaper
from cauce.cluster._reaper import group_alive
from cauce.cluster.spark._netif import network_env
from cauce.cluster.spark._wire import PING, Channel, connect, keep_alive, ping_interval
from cauce.frameworks import task_env
from cauce.frameworks.api import GangLayout, TaskSlot

__all__ = ["run_partition"]

#: Variables of Spark's Python worker that are none of the command's business.
_WORKER_ONLY = ("PYTHON_WORKER_FACTORY_SECRET", "PYTHON_WORKER_FACTORY_PORT", "SPARK_REUSE_WORKER")
_CONNECT_TIMEOUT = 30.0
_TAIL_EVERY = 0.2


def run_partition(bundle_json: str, rows: Iterable[int]) -> Iterator[str]:
    """The body of the barrier stage (``mapPartitions``); yields one JSON summary."""
    del rows
    from pyspark import BarrierTaskContext

    bundle: dict[str, Any] = json.loads(bundle_json)
    ctx = BarrierTaskContext.get()
    index = ctx.partitionId()
    task: dict[str, Any] = bundle["tasks"][index]
    link_timeout = float(bundle.get("link_timeout", 20.0))
    channel, why = _hello(bundle, task["task_id"], link_timeout)
    host = ctx.getTaskInfos()[index].address.rsplit(":", 1)[0]
    resources = ctx.resources()
    gpus = list(resources["gpu"].addresses) if "gpu" in resources else []
    mine = {"ok": channel is not None, "host": host, "port": free_ports(1, host)[0], "gpus": gpus}
    gathered = [json.loads(text) for text in ctx.allGather(json.dumps(mine))]
    if channel is None or not all(other["ok"] for other in gathered):
        if channel is not None:
            channel.close()
        else:
            sys.stderr.write(f"cauce: {task['task_id']}: {why}\n")
        yield json.dumps({"task": task["task_id"], "exit": None, "why": why or "a peer failed"})
        return
    try:
        code, runtime = _Command(bundle, task, gathered, channel).run()
    finally:
        channel.close()
    yield json.dumps({"task": task["task_id"], "exit": code, "runtime": runtime})


def _hello(bundle: dict[str, Any], task_id: str, link_timeout: float) -> tuple[Channel | None, str]:
    host, port = bundle["driver"]
    try:
        channel = connect(host, int(port), _CONNECT_TIMEOUT)
    except OSError as exc:
        return None, f"cannot reach the cauce driver at {host}:{port}: {exc}"
    keep_alive(channel.sock, link_timeout)
    channel.sock.settimeout(_CONNECT_TIMEOUT)
    channel.send({"hello": bundle["token"], "task": task_id})
    answer = channel.receive()
    channel.sock.settimeout(None)
    if not answer or not answer.get("ok"):
        channel.close()
        return None, str((answer or {}).get("why", "the driver refused this task"))
    threading.Thread(target=_ping, args=(channel, link_timeout), daemon=True).start()
    return channel, ""


def _ping(channel: Channel, link_timeout: float) -> None:
    """The task's heartbeat to the driver, until the link closes."""
    every = ping_interval(link_timeout)
    while not channel.closed:
        time.sleep(every)
        channel.send(PING)


def _layout(bundle: dict[str, Any], gathered: list[dict[str, Any]]) -> GangLayout:
    slots = tuple(
        TaskSlot(
            task_id=slot["task_id"],
            role=slot["role"],
            index=slot["index"],
            host=where["host"],
            port=int(where["port"]),
            gpus=tuple(str(gpu) for gpu in where["gpus"]),
            cpus=float(slot["cpus"]),
            tracked=bool(slot["tracked"]),
        )
        for slot, where in zip(bundle["slots"], gathered, strict=True)
    )
    return GangLayout(
        job_id=bundle["job_id"],
        job_name=bundle["job_name"],
        framework=bundle["framework"],
        attempt=int(bundle["attempt"]),
        max_restarts=int(bundle["max_restarts"]),
        slots=slots,
        rendezvous=bundle["rendezvous"],
    )


class _Command:
    """The task's command on this executor, from start to a reported exit."""

    def __init__(
        self,
        bundle: dict[str, Any],
        task: dict[str, Any],
        gathered: list[dict[str, Any]],
        channel: Channel,
    ) -> None:
        self.task = task
        self.channel = channel
        self.grace = float(bundle["grace"])
        self.link_timeout = float(bundle.get("link_timeout", 20.0))
        self.folder = tempfile.mkdtemp(prefix=f"cauce-{task['task_id']}-")
        self.progress = os.path.join(self.folder, "progress.jsonl")
        self.control = os.path.join(self.folder, "control-stop")
        self.layout = _layout(bundle, gathered)
        self.env = self._env(set(bundle["strip"]))
        self.stopping = threading.Event()
        self._offset = 0
        self._partial = b""
        self._tail_lock = threading.Lock()

    def _env(self, strip: set[str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in strip and k not in _WORKER_ONLY}
        bindir = os.path.dirname(sys.executable)
        path = env.get("PATH", "")
        if path.split(os.pathsep)[:1] != [bindir]:
            env["PATH"] = bindir + (os.pathsep + path if path else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.task["inherit"])
        env.update(task_env(self.layout, self.task["task_id"]))
        network, self.notes = network_env(self.layout, self.task["task_id"], env)
        env.update(network)
        env.update(self.task["overrides"])
        if self.task["progress"]:
            env["CAUCE_PROGRESS_FILE"] = self.progress
        if self.task["control"]:
            env["CAUCE_CONTROL_FILE"] = self.control
        return env

    def run(self) -> tuple[int, float]:
        slot = self.layout.slot(self.task["task_id"])
        started = time.monotonic()
        argv = list(self.task["argv"])
        for note in self.notes:
            self.channel.send({"o": note})
        # Once this Python worker is gone (a cancelled job, a lost executor, an application that
        # ended with its driver), Spark counts the task's GPUs free and may give them to the
        # next task at once: then the command's group is killed at once, not after a grace
        # period, so that it never runs beside that task. (A stop asked by the driver, or a
        # lost connection, still gives it the grace period, while this task holds the GPUs.)
        # The reaper removes the task's folder too, when Spark kills this worker.
        reaper = Reaper(grace=0.0 if slot.gpus else self.grace)
        reaper.scratch(self.folder)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.task["cwd"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            cwd = self.task["cwd"]
            line = f"cauce: cannot start {argv[0]!r} in {cwd!r} on {slot.host}: {exc.strerror}"
            self.channel.send({"o": line})
            self.channel.send({"exit": 127, "runtime": 0.0})
            shutil.rmtree(self.folder, ignore_errors=True)
            reaper.close()
            return 127, 0.0
        reaper.watch(proc.pid)
        try:
            self.channel.send(
                {"started": proc.pid, "host": slot.host, "port": slot.port, "gpus": list(slot.gpus)}
            )
            reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
            reader.start()
            self.channel.last_heard = time.monotonic()
            threading.Thread(target=self._listen, args=(proc,), daemon=True).start()
            threading.Thread(target=self._watch_link, args=(proc,), daemon=True).start()
            threading.Thread(target=self._tail_loop, args=(proc,), daemon=True).start()
            code = proc.wait()
            runtime = time.monotonic() - started
            reader.join(timeout=2.0)
            self._tail()
            self._end_group(proc.pid)
            self.channel.send({"exit": code, "runtime": runtime})
            return code, runtime
        finally:
            if proc.poll() is None or group_alive(proc.pid):
                self.stopping.set()
                self._end_group(proc.pid)  # killed at once; returns once the group is gone
                proc.wait()
            reaper.unwatch(proc.pid)
            reaper.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        task_id = self.task["task_id"]
        with proc.stdout as stream:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not self.channel.send({"o": line}):
                    sys.stderr.write(f"[{task_id}] {line}\n")  # the executor's log
                    sys.stderr.flush()

    def _watch_link(self, proc: subprocess.Popen[bytes]) -> None:
        """A driver silent past the link timeout is gone: stop the command."""
        every = min(1.0, ping_interval(self.link_timeout))
        while proc.poll() is None and not self.channel.closed:
            silent = time.monotonic() - self.channel.last_heard
            if silent > self.link_timeout:
                sys.stderr.write(
                    f"cauce: {self.task['task_id']}: no word from the driver for {silent:.0f} s "
                    f"(link timeout {self.link_timeout:g} s): stopping the command\n"
                )
                sys.stderr.flush()
                self.channel.close()  # _listen sees the link closed and stops the command
                self._stop(proc, self.grace)
                return
            time.sleep(every)

    def _listen(self, proc: subprocess.Popen[bytes]) -> None:
        """Orders from the driver; a closed connection (the driver is gone) stops the command."""
        while True:
            message = self.channel.receive()
            if message is None:
                self._stop(proc, self.grace)
                return
            if "ctl" in message:
                with open(self.control, "w", encoding="utf-8") as file:
                    file.write(str(message["ctl"]) + "\n")
            if "stop" in message:
                self._stop(proc, float(message["stop"]))

    def _stop(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        if self.stopping.is_set() or proc.poll() is not None:
            return
        self.stopping.set()
        _signal(proc.pid, signal.SIGTERM)
        _signal(proc.pid, signal.SIGCONT)  # a stopped command gets SIGTERM once continued
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        _signal(proc.pid, signal.SIGKILL)

    def _end_group(self, pgid: int) -> None:
        """Once the command has ended, what it left in its group goes too (SIGTERM, grace,
        SIGKILL), so that an exit reported to the driver means every process is gone."""
        if not group_alive(pgid):
            return
        _signal(pgid, signal.SIGTERM)
        _signal(pgid, signal.SIGCONT)
        deadline = time.monotonic() + (0.0 if self.stopping.is_set() else self.grace)
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _tail_loop(self, proc: subprocess.Popen[bytes]) -> None:
        while proc.poll() is None:
            self._tail()
            time.sleep(_TAIL_EVERY)

    def _tail(self) -> None:
        """Send the new complete lines of the progress file."""
        with self._tail_lock:
            try:
                with open(self.progress, "rb") as file:
                    file.seek(self._offset)
                    data = file.read()
            except OSError:
                return
            self._offset += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                self.channel.send({"p": line.decode("utf-8", errors="replace")})


def _signal(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
