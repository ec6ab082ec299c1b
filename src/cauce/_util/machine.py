"""What this process may use of its machine: CPUs and memory as the kernel bounds them, and how
busy those CPUs are.

In a container (a Kubernetes pod with limits, a YARN container under cgroups, ``docker run
--cpus --memory``) ``/proc/meminfo`` and the CPU count are the host's. What bounds the process is
its CPU affinity and the limits of its cgroup and of every cgroup above it: cgroup v2's
``cpu.max`` and ``memory.max``, v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and
``memory.limit_in_bytes``. The smallest counts. Where there is no cgroup file to read (not
Linux, a hierarchy not mounted), the host's figures stand.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CgroupLimits",
    "CpuSample",
    "available_cpus",
    "cgroup_limits",
    "cpu_sample",
    "spare_cores",
    "total_memory",
]

#: A v1 memory limit at or above this is "no limit" (the kernel writes 2**63 rounded to a page).
_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class CgroupLimits:
    """The smallest limits on the path from this process's cgroups to their roots. ``cpus``:
    the CPU quota in CPUs (``cpu.max`` 150000 100000 is 1.5); ``memory``: bytes. ``usage``:
    the file counting the CPU time of the cgroup whose quota is ``cpus`` (v2 ``cpu.stat``'s
    ``usage_usec``, v1 ``cpuacct.usage`` in ns), to tell how much of the quota is spent."""

    cpus: float | None = None
    memory: int | None = None
    usage: Path | None = None


@dataclass(frozen=True)
class _Mount:
    root: str  # the cgroup path the mount shows at its mount point
    point: Path
    v2: bool
    controllers: frozenset[str]  # v1: the controllers of the hierarchy


def _mounts(mountinfo: str) -> list[_Mount]:
    """The cgroup mounts of ``/proc/self/mountinfo`` (proc(5): fields, then ``-``, then the
    filesystem type, its source and its options)."""
    found = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        point = Path(fields[4].replace("\\040", " "))
        controllers = frozenset(after[2].split(",")) if after[0] == "cgroup" else frozenset()
        found.append(_Mount(fields[3], point, after[0] == "cgroup2", controllers))
    return found


def _memberships(cgroup: str) -> list[tuple[frozenset[str], str]]:
    """``/proc/self/cgroup`` as (controllers, path): ``0::/a/b`` is v2 (no controllers)."""
    out = []
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((frozenset(filter(None, parts[1].split(","))), parts[2]))
    return out


def _chain(mount: _Mount, path: str) -> list[Path]:
    """This process's cgroup folder in ``mount`` and every folder above it up to the mount
    point, nearest first; empty when the cgroup is not below what the mount shows."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return []
    rel = path[len(root) :].strip("/")
    here = mount.point / rel if rel else mount.point
    chain = [here]
    while chain[-1] != mount.point:
        chain.append(chain[-1].parent)
    return chain


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cpu_quota(folder: Path, v2: bool) -> float | None:
    if v2:
        text = _read(folder / "cpu.max")
        quota, _, period = (text or "max").partition(" ")
    else:
        quota, period = (
            _read(folder / "cpu.cfs_quota_us") or "-1",
            _read(folder / "cpu.cfs_period_us") or "",
        )
    with contextlib.suppress(ValueError, ZeroDivisionError):
        value = int(quota) / int(period)
        return value if value > 0 else None
    return None


def _memory_limit(folder: Path, v2: bool) -> int | None:
    text = _read(folder / ("memory.max" if v2 else "memory.limit_in_bytes"))
    with contextlib.suppress(ValueError):
        value = int(text or "max")  # "max": none (v2)
        return value if 0 < value < _NO_LIMIT else None
    return None


def cgroup_limits(proc: Path = Path("/proc")) -> CgroupLimits:
    """The CPU quota and memory limit of this process's cgroups (see the module's docstring),
    read from ``proc``'s ``self/mountinfo`` and ``self/cgroup`` and the files they point to."""
    mountinfo, cgroup = _read(proc / "self" / "mountinfo"), _read(proc / "self" / "cgroup")
    if mountinfo is None or cgroup is None:
        return CgroupLimits()
    cpus: float | None = None
    memory: int | None = None
    usage: Path | None = None
    for controllers, path in _memberships(cgroup):
        for mount in _mounts(mountinfo):
            if mount.v2 != (not controllers) or not (mount.v2 or controllers <= mount.controllers):
                continue
            for folder in _chain(mount, path):
                if mount.v2 or "cpu" in controllers:
                    quota = _cpu_quota(folder, mount.v2)
                    if quota is not None and (cpus is None or quota < cpus):
                        cpus, usage = quota, _usage_file(folder, mount, mountinfo)
                if mount.v2 or "memory" in controllers:
                    limit = _memory_limit(folder, mount.v2)
                    if limit is not None and (memory is None or limit < memory):
                        memory = limit
    return CgroupLimits(cpus, memory, usage)


def _usage_file(folder: Path, mount: _Mount, mountinfo: str) -> Path | None:
    """Where the CPU time of cgroup ``folder`` is counted: its ``cpu.stat`` (v2), or the same
    cgroup in the v1 ``cpuacct`` hierarchy (often mounted together with ``cpu``)."""
    if mount.v2:
        return folder / "cpu.stat"
    if "cpuacct" in mount.controllers:
        return folder / "cpuacct.usage"
    rel = folder.relative_to(mount.point)
    for other in _mounts(mountinfo):
        if "cpuacct" in other.controllers and not other.v2:
            found = other.point / rel / "cpuacct.usage"
            return found if found.exists() else None
    return None


def _used_seconds(usage: Path | None) -> float | None:
    """CPU seconds counted in ``usage`` (see :class:`CgroupLimits`), or None."""
    text = _read(usage) if usage is not None else None
    if text is None or usage is None:
        return None
    with contextlib.suppress(ValueError):
        if usage.name == "cpuacct.usage":
            return int(text) / 1e9
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    return None


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None


def available_cpus(limits: CgroupLimits | None = None) -> float:
    """CPUs this process may use: its affinity (else the CPU count), capped by its cgroups' CPU
    quota. May be a fraction (a quota of 1.5 CPUs)."""
    allowed = _affinity()
    cpus = float(len(allowed)) if allowed else float(os.cpu_count() or 1)
    quota = (limits or cgroup_limits()).cpus
    return min(cpus, quota) if quota is not None else cpus


def total_memory(limits: CgroupLimits | None = None) -> int:
    """Bytes of memory this process may use: the host's, capped by its cgroups' limit; 0 when
    unknown."""
    host = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                host = int(line.split()[1]) * 1024
                break
    if not host:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = (limits or cgroup_limits()).memory
    return min(host, limit) if host and limit else host or (limit or 0)


@dataclass(frozen=True)
class CpuSample:
    """One reading for :func:`spare_cores`: the jiffies (all, idle and iowait) of the CPUs this
    process may run on, how many they are, and, under a CPU quota of ``quota`` CPUs, the
    cgroup's CPU seconds at ``wall`` (monotonic seconds)."""

    total: float
    idle: float
    cpus: int
    wall: float = 0.0
    used: float | None = None
    quota: float | None = None


def cpu_sample(limits: CgroupLimits | None = None) -> CpuSample | None:
    """A reading of ``/proc/stat`` and of the cgroup's CPU time; None where there is no
    ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            lines = stat.read().splitlines()
    except OSError:
        return None
    allowed = _affinity()
    total = idle = 0.0
    count = 0
    for line in lines:
        if not (line.startswith("cpu") and line[3:4].isdigit()):
            continue
        name, *values = line.split()
        if allowed is not None and int(name[3:]) not in allowed:
            continue
        fields = [float(v) for v in values[:8]]  # guest time is counted in user time
        total += sum(fields)
        idle += fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        count += 1
    limits = limits or cgroup_limits()
    used = _used_seconds(limits.usage) if limits.cpus is not None else None
    quota = limits.cpus if used is not None else None
    return CpuSample(total, idle, max(1, count), time.monotonic(), used, quota)


def spare_cores(before: CpuSample, after: CpuSample) -> float:
    """Cores idle between two readings (0 when no time passed): the idle share of the CPUs this
    process may run on, and under a quota no more than what the cgroup left of it."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    spare = (after.idle - before.idle) / total * after.cpus
    wall = after.wall - before.wall
    if after.quota is not None and after.used is not None and before.used is not None and wall > 0:
        spare = min(spare, after.quota - (after.used - before.used) / wall)
    return max(0.0, spare)
