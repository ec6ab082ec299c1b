"""The ``local`` cluster: this host's CPUs, memory and GPUs.

CPUs and memory are checked per gang against the host (a gang asking for more than the host has
is refused at once). Tasks that do not declare ``resources.cpus`` are not counted: like
``torchrun --nproc-per-node N``, they may oversubscribe the host, with one note. GPUs are
leased host-wide (see ``_leases``), so concurrent drivers never share one; a gang that needs
more GPUs than are free waits for them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

from cauce._util.machine import available_cpus, cgroup_limits, total_memory
from cauce.cluster._host import detect_gpus
from cauce.cluster._leases import GpuLeases, Lease
from cauce.cluster._ports import free_ports
from cauce.cluster._procs import LocalGang, Reaper
from cauce.cluster._warm import WarmStarts
from cauce.cluster.api import (
    Cluster,
    GangRequest,
    HostCapacity,
    OutputSink,
    Reservation,
    RunningGang,
    TaskExit,
    TaskLaunch,
    Waiting,
)
from cauce.errors import PlacementError
from cauce.frameworks.api import GangLayout

__all__ = ["LocalCluster", "default_lease_dir"]

HOST = "127.0.0.1"


def default_lease_dir() -> str:
    return os.environ.get("CAUCE_LEASE_DIR") or os.path.join(tempfile.gettempdir(), "cauce-leases")


def _fmt_gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


class _LocalReservation(Reservation):
    def __init__(
        self, placements: Mapping[str, tuple[str, tuple[str, ...]]], leases: list[Lease]
    ) -> None:
        self.placements = dict(placements)
        self._leases = leases
        #: the reaper that holds the leases too (see ``LocalCluster.start``), and its key
        self.held_by: tuple[Reaper, str] | None = None

    @property
    def lease_fds(self) -> list[int]:
        return [lease.lock.fd for lease in self._leases if lease.lock.fd >= 0]

    def ports(self, task_ids: Sequence[str]) -> dict[str, int]:
        return dict(zip(task_ids, free_ports(len(task_ids)), strict=True))

    def release(self) -> None:
        # Unlocking one copy of a lock file unlocks it for every holder of that open file,
        # the reaper included; then the reaper closes its copies.
        for lease in self._leases:
            lease.release()
        self._leases = []
        if self.held_by is not None:
            reaper, key = self.held_by
            self.held_by = None
            reaper.drop(key)


class LocalCluster(Cluster):
    name = "local"
    starts_here = True

    def __init__(
        self,
        *,
        cpus: float | None = None,
        memory: int | None = None,
        gpus: Sequence[str] | None = None,
        lease_dir: str | None = None,
        env: Mapping[str, str] | None = None,
        declared_gpus: str | None = None,
        warm: WarmStarts | None = None,
    ) -> None:
        """``warm``: the warm starts (``preload:``) to use, which their owner closes (a study's,
        shared by its trials' clusters); by default this cluster's own."""
        limits = cgroup_limits() if cpus is None or memory is None else None
        self.cpus = available_cpus(limits) if cpus is None else float(cpus)
        self.memory = total_memory(limits) if memory is None else int(memory)
        #: Said beside the figures when a container's cgroup limits them.
        self._cpu_note = " (its cgroup's CPU quota)" if limits and limits.cpus == self.cpus else ""
        self._memory_note = (
            " (its cgroup's memory limit)" if limits and limits.memory == self.memory else ""
        )
        if gpus is None:
            found, self.gpu_source = detect_gpus(env, declared_gpus)
            self.gpus: tuple[str, ...] = found
        else:
            self.gpus, self.gpu_source = tuple(gpus), "given"
        self.leases = GpuLeases(lease_dir or default_lease_dir())
        self._reaper: Reaper | None = None
        self._warm, self._owns_warm = warm or WarmStarts(), warm is None
        self._reservations: list[_LocalReservation] = []
        self._keys = itertools.count()

    def describe(self) -> list[HostCapacity]:
        return [HostCapacity(HOST, self.cpus, self.memory, self.gpus)]

    def check(self, request: GangRequest) -> None:
        problems = []
        if request.gpus > len(self.gpus):
            have = f"{len(self.gpus)} ({self.gpu_source})" if self.gpus else "none"
            problems.append(
                f"needs {request.gpus} GPUs, this host has {have}; lower resources.gpus, "
                f"or declare GPUs with CAUCE_GPUS=0,1,..."
            )
        if request.declared_cpus > self.cpus + 1e-9:
            problems.append(
                f"needs {request.declared_cpus:g} CPUs, this host has {self.cpus:g}"
                f"{self._cpu_note}; lower "
                f"resources.cpus (fractions like 0.5 are allowed) or the instances, or offer "
                f"more CPUs with local.cpus: {math.ceil(request.declared_cpus)} in "
                f"$CAUCE_HOME/config.yaml"
            )
        if self.memory and request.memory > self.memory:
            problems.append(
                f"needs {_fmt_gib(request.memory)} of memory, this host has "
                f"{_fmt_gib(self.memory)}{self._memory_note}; lower resources.memory"
            )
        if problems:
            raise PlacementError("this job can never fit on this host: " + "; ".join(problems))

    def notes(self, request: GangRequest) -> list[str]:
        if request.cpus <= self.cpus + 1e-9:
            return []
        return [
            f"{len(request.tasks)} tasks on {self.cpus:g} CPUs: this host is oversubscribed "
            "(tasks without resources.cpus share the CPUs, as with torchrun --nproc-per-node)"
        ]

    def try_reserve(self, request: GangRequest) -> Reservation | Waiting:
        leases: list[Lease] = []
        if request.gpus:
            got, free = self.leases.try_acquire(self.gpus, request.gpus, holder=request.job_id)
            if got is None:
                return Waiting(f"needs {request.gpus} GPUs, {free} free")
            leases = got
        placements: dict[str, tuple[str, tuple[str, ...]]] = {}
        position = 0
        for task in request.tasks:
            n = task.resources.gpus
            placements[task.task_id] = (
                HOST,
                tuple(lease.gpu for lease in leases[position : position + n]),
            )
            position += n
        reservation = _LocalReservation(placements, leases)
        if leases:
            self._reservations.append(reservation)
        return reservation

    def start(
        self,
        layout: GangLayout,
        launches: Sequence[TaskLaunch],
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        *,
        grace: float = 10.0,
    ) -> RunningGang:
        if self._reaper is None:
            self._reaper = Reaper(grace=grace)
        self._hand_leases(self._reaper)
        return LocalGang(launches, on_output, on_exit, self._reaper, self._warm)

    def _hand_leases(self, reaper: Reaper) -> None:
        """The reaper holds the GPU leases of the gangs it watches too, so that if the driver
        dies they stay leased until those gangs' tasks are gone (see ``_reaper``)."""
        for reservation in self._reservations:
            fds = reservation.lease_fds
            if reservation.held_by is None and fds:
                key = str(next(self._keys))
                reaper.hold(key, fds)
                reservation.held_by = (reaper, key)
        self._reservations = [r for r in self._reservations if r.lease_fds]

    def close(self) -> None:
        if self._owns_warm:
            self._warm.close()
        if self._reaper is not None:
            with contextlib.suppress(OSError):
                self._reaper.close()
            self._reaper = None
