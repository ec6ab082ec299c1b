"""What Linux says about processes, from ``/proc``."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ProcStat", "all_pids", "proc_stat", "start_time"]


@dataclass(frozen=True)
class ProcStat:
    """Fields of ``/proc/PID/stat``. ``state`` is one letter (``R``, ``S``, ``D``, ``T``, ``Z``,
    ...); ``start_ticks`` the start time in clock ticks after boot (with the pid, it names a
    process even after its pid is reused); ``cpu_ticks`` user plus system time in clock ticks."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    start_ticks: int
    cpu_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    """The stat of ``pid``, or None when it is gone (or ``/proc`` cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    # comm is in parentheses and may itself hold spaces and parentheses: it ends at the last ")".
    head, sep, tail = raw.rpartition(b")")
    _, open_paren, comm = head.partition(b"(")
    fields = tail.split()
    if not sep or not open_paren or len(fields) < 20:
        return None
    try:
        # fields[0] is field 3 of proc(5): state, ppid, pgrp, ..., utime (14), stime (15),
        # ..., starttime (22).
        return ProcStat(
            pid=pid,
            comm=comm.decode("utf-8", errors="replace"),
            state=fields[0].decode("ascii", errors="replace"),
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            start_ticks=int(fields[19]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
        )
    except ValueError:
        return None


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks after boot, or None when it is gone. A zombie
    (exited, not yet reaped) is gone: it keeps its stat, start time included, until reaped."""
    stat = proc_stat(pid)
    return None if stat is None or stat.state == "Z" else stat.start_ticks


def all_pids() -> list[int]:
    """Pids of every process visible in ``/proc`` (empty if it cannot be listed)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    return [int(entry) for entry in entries if entry.isdigit()]
