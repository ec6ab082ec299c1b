"""The reaper: a tiny watchdog process that outlives its driver until the driver's tasks are gone.

The driver starts one per job with a ``SOCK_SEQPACKET`` socket on its stdin and sends one message
each time: ``+PGID`` when it starts a task (each task leads its own process group), ``-PGID`` once
that group is gone, ``LKEY`` with file descriptors attached (the driver's GPU lease locks, which
the reaper then holds too), ``UKEY`` once the driver has released those leases, and ``RPATH``
for a scratch folder of the driver's (a task's control files) to remove at the end. When the
socket closes, whether the driver exited or was killed with SIGKILL, the reaper sends SIGTERM
(then SIGCONT, so that a stopped task gets it) to every group still listed, waits for the grace
period, SIGKILLs what is left, and waits until every group is gone. Only then does it exit,
closing its copies of the lease locks: a lock held with ``flock`` belongs to the open file, so it
is held while the driver or the reaper has it open, and a job waiting for those GPUs starts only
once the tasks that used them are gone. So no task outlives its job, nor its GPUs' lease. The
scratch folders go last, once nothing writes to them (a driver that ends normally has removed
them itself).
Standard library only: it is run as a script, with ``python -I -S``, to start fast.
"""

import contextlib
import os
import shutil
import signal
import socket
import sys
import time

__all__ = ["group_alive"]

_MAX_FDS = 64
_MAX_MESSAGE = 8192  # a message is one kind byte and a number, a key or a path


def group_alive(pgid: int) -> bool:
    """True while a process of the group is alive. Zombies do not count: a grandchild whose
    parent (the task) is gone waits as a zombie until init reaps it, which can take a while."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _signal(pgids: set[int], sig: int) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _listen(
    channel: socket.socket, groups: set[int], held: dict[bytes, list[int]], scratch: list[str]
) -> None:
    """Follow the driver's messages until its end of the socket closes."""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(channel, _MAX_MESSAGE, _MAX_FDS)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            _close(fds)
            return
        kind, rest = data[:1], data[1:].strip()
        if kind == b"L":
            held.setdefault(rest, []).extend(fds)
            continue
        _close(fds)
        if kind == b"U":
            _close(held.pop(rest, []))
            continue
        if kind == b"R":
            scratch.append(os.fsdecode(data[1:]))
            continue
        try:
            pgid = int(rest)
        except ValueError:
            continue
        if kind == b"+":
            groups.add(pgid)
        elif kind == b"-":
            groups.discard(pgid)


def _reap(groups: set[int], grace: float) -> None:
    groups = {pgid for pgid in groups if group_alive(pgid)}
    if not groups:
        return
    _signal(groups, signal.SIGTERM)
    _signal(groups, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.1)
        groups = {pgid for pgid in groups if group_alive(pgid)}
    _signal(groups, signal.SIGKILL)
    # The leases are held until the processes that used the GPUs are gone, however long the
    # kernel takes to end them (a process in uninterruptible sleep dies when it wakes).
    while groups:
        time.sleep(0.1)
        groups = {pgid for pgid in groups if group_alive(pgid)}


def main() -> int:
    grace = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    # Ctrl-C in the driver's terminal must not kill the reaper before it has done its work.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    groups: set[int] = set()
    held: dict[bytes, list[int]] = {}
    scratch: list[str] = []
    with socket.socket(fileno=sys.stdin.fileno()) as channel:
        _listen(channel, groups, held, scratch)
    _reap(groups, grace)
    for fds in held.values():
        _close(fds)
    for path in scratch:
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
