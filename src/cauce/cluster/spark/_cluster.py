"""The ``spark`` cluster object: placement on the executors' free slots, one barrier stage per
attempt (see the package's docstring)."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

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
from cauce.cluster.spark._gang import GangSubmission, SparkGang
from cauce.cluster.spark._links import DEFAULT_LINK_TIMEOUT
from cauce.cluster.spark._session import SharedSpark, acquire
from cauce.errors import PlacementError
from cauce.frameworks import GangLayout, contract_names, task_env
from cauce.spec import parse_duration

__all__ = [
    "DEFAULT_LINK_TIMEOUT",
    "DEFAULT_PLACEMENT_TIMEOUT",
    "PLACEHOLDER_GPU",
    "PLACEHOLDER_HOST",
    "SparkCluster",
    "parse_duration",
    "task_shape",
]

#: Where a task runs and which GPUs it gets are Spark's decision, known on the executor only;
#: the driver's plan (``cauce run --dry-run``, the history) shows these instead.
PLACEHOLDER_HOST = "<executor>"
PLACEHOLDER_GPU = "<gpu>"
DEFAULT_PLACEMENT_TIMEOUT = 120.0
#: Driver variables that say nothing about an executor; it gets its own.
_DRIVER_ONLY = frozenset({"PATH", "PYTHONUNBUFFERED", "PWD", "OLDPWD", "SHLVL", "_"})
#: Where the shared storage is and who may use it: the driver's go to every task, so that the
#: tasks read and write what the driver does (docs/spark.md, "Shared storage").
_STORAGE: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_STORAGE += ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def barrier_check_settings(placement_timeout: float) -> dict[str, str]:
    """Spark's own check that a barrier stage fits (it retries every ``interval``, 15 s, up to
    ``maxFailures`` times, 40: 10 minutes) bounded by the placement timeout."""
    interval = int(max(1.0, min(15.0, placement_timeout // 8)))
    return {
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": f"{interval}s",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": str(
            max(1, math.ceil(placement_timeout / interval))
        ),
    }


def task_shape(request: GangRequest) -> tuple[int, int]:
    """(cores, GPUs) every task of the stage asks Spark for."""
    gpus = {task.resources.gpus for task in request.tasks}
    if len(gpus) > 1:
        per_role = sorted({(t.role, t.resources.gpus) for t in request.tasks})
        listed = ", ".join(f"{role} {n}" for role, n in per_role)
        raise PlacementError(
            f"Spark gives every task of a gang's barrier stage the same resources, but these "
            f"roles need different GPU counts ({listed}); give every role the same "
            "resources.gpus"
        )
    cpus = max(task.resources.cpus for task in request.tasks)
    return max(1, math.ceil(cpus - 1e-9)), gpus.pop()


class _SparkReservation(Reservation):
    def __init__(
        self, shared: SharedSpark, request: GangRequest, renew: Callable[[], Waiting | None]
    ) -> None:
        self._shared = shared
        self._job_id = request.job_id
        self._renew = renew
        self._shape = task_shape(request)
        self.placements = {
            task.task_id: (PLACEHOLDER_HOST, (PLACEHOLDER_GPU,) * task.resources.gpus)
            for task in request.tasks
        }

    def ports(self, task_ids: Sequence[str]) -> dict[str, int]:
        """Ports are picked on the executors; 0 stands for "not known here"."""
        return dict.fromkeys(task_ids, 0)

    def preview(self) -> tuple[dict[str, int] | None, str]:
        """Where a probe stage of the gang's shape lands now (see ``_probe.preview``)."""
        from cauce.cluster.spark._probe import preview

        found, ports, note = preview(self._shared, list(self.placements), *self._shape)
        self.placements = {**self.placements, **found}
        return ports, note

    def release(self) -> None:
        self._shared.unhold(self._job_id)

    def renew(self) -> Waiting | None:
        """A fresh free-slot check for a restart: the executors of a lost host are gone."""
        return self._renew()


class SparkCluster(Cluster):
    """A Spark master as a cauce cluster. One object per driver; objects share the session."""

    name = "spark"
    dry_run_wait = 60.0

    def __init__(self, master: str, conf: Mapping[str, str] | None = None) -> None:
        self.master = master
        self.conf = dict(conf or {})
        self.name = f"spark ({master})"
        self.placement_timeout = parse_duration(
            self.conf.get("spark.cauce.placementTimeout", str(DEFAULT_PLACEMENT_TIMEOUT)),
            "spark.cauce.placementTimeout",
        )
        self.link_timeout = parse_duration(
            self.conf.get("spark.cauce.linkTimeout", str(DEFAULT_LINK_TIMEOUT)),
            "spark.cauce.linkTimeout",
        )
        self._shared: SharedSpark | None = None
        self._lock = threading.Lock()
        self._waiting_since: dict[str, float] = {}
        self._request: GangRequest | None = None

    def session(self) -> SharedSpark:
        """This process's Spark application, started on first use."""
        with self._lock:
            if self._shared is None:
                settings = {**barrier_check_settings(self.placement_timeout), **self.conf}
                self._shared = acquire(self.master, settings)
            return self._shared

    def close(self) -> None:
        """Let go of the Spark application (stopped when no cluster object uses it)."""
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            shared.release()

    def driver_address(self) -> DriverAddress:
        """Where executors reach this driver (``_address`` chose it as the session started)."""
        return self.session().driver

    def describe(self) -> list[HostCapacity]:
        return [
            HostCapacity(f"{ex.host} (executor {ex.id})", float(ex.cores), ex.memory, ex.gpus)
            for ex in self.session().executors()
        ]

    def check(self, request: GangRequest) -> None:
        cpus, gpus = task_shape(request)
        shared = self.session()
        if gpus and self.master.startswith("local"):
            raise PlacementError(
                f"needs {gpus} GPUs per task, and Spark's {self.master} schedules no GPUs; use a "
                "Spark cluster, or cauce's local cluster"
            )
        per_executor = float(shared.setting("spark.executor.resource.gpu.amount", "0"))
        if gpus > per_executor:
            have = f"{per_executor:g} GPUs per executor" if per_executor else "no executor GPUs"
            raise PlacementError(
                f"needs {gpus} GPUs per task, and this Spark application has {have}; set "
                f"spark.executor.resource.gpu.amount to {gpus} or more (and a discovery script, "
                "see docs/spark.md)"
            )
        cores = int(shared.setting("spark.executor.cores", "0"))
        if cores and cpus > cores:
            raise PlacementError(
                f"needs {cpus} cores per task, and spark.executor.cores is {cores}; lower "
                "resources.cpus or raise spark.executor.cores"
            )

    def need(self, request: GangRequest) -> str:
        """``needs 4 task slots, 2 free (2 executors)``: what placement waits for."""
        cpus, gpus = task_shape(request)
        total, free, executors = self.session().free_slots(cpus, gpus)
        shape = f" of {cpus} cores and {gpus} GPUs" if gpus else ""
        if not executors:
            where = "no executors yet"
        else:
            where = f"{len(executors)} executors, {total} slots in all"
        return f"needs {len(request.tasks)} task slots{shape}, {free} free ({where})"

    def try_reserve(self, request: GangRequest) -> Reservation | Waiting:
        waiting = self._hold(request)
        if waiting is not None:
            return waiting
        self._request = request
        return _SparkReservation(self.session(), request, lambda: self._renew(request))

    def _renew(self, request: GangRequest) -> Waiting | None:
        """Another attempt: let go of the slots held, and hold them again if they are free."""
        self.session().unhold(request.job_id)
        return self._hold(request)

    def _hold(self, request: GangRequest) -> Waiting | None:
        """Hold the gang's slots if they are free now; else why not (or, once it has waited
        the placement timeout, :class:`PlacementError`)."""
        cpus, gpus = task_shape(request)
        shared = self.session()
        if shared.stopped():
            raise PlacementError(
                f"the Spark application on {self.master} has stopped (see Spark's log above)"
            )
        if shared.hold(request.job_id, len(request.tasks), cpus, gpus):
            self._waiting_since.pop(request.job_id, None)
            return None
        reason = self.need(request)
        now = time.monotonic()
        since = self._waiting_since.setdefault(request.job_id, now)
        if now - since >= self.placement_timeout:
            raise PlacementError(
                f"gave up placing job {request.job_id} on {self.master} after "
                f"{now - since:.0f} s (spark.cauce.placementTimeout): {reason}; add executors, "
                "lower the instances, or raise spark.cauce.placementTimeout"
            )
        return Waiting(reason)

    def start(
        self,
        layout: GangLayout,
        launches: Sequence[TaskLaunch],
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        *,
        grace: float = 10.0,
    ) -> RunningGang:
        shared = self.session()
        request = self._request
        if request is None:  # start without try_reserve: the request is the layout
            raise PlacementError("start() needs a reservation from try_reserve() first")
        cpus, gpus = task_shape(request)
        submission = GangSubmission(
            sc=shared.sc,
            profile=shared.profile(cpus, gpus),
            bind_host=shared.driver.bind,
            advertised_host=shared.driver.advertised,
            grace=grace,
            placement_timeout=self.placement_timeout,
            link_timeout=self.link_timeout,
            strip=contract_names(),
            env=_split_env(layout, launches),
            describe_need=lambda: self.need(request),
        )
        return SparkGang(layout, launches, on_output, on_exit, submission)


def _split_env(
    layout: GangLayout, launches: Sequence[TaskLaunch]
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Per task: the variables an executor takes from the driver (what cauce or the spec set,
    or what differs from the driver's own environment), and the contract variables that the
    spec overrides. The contract itself is recomputed on the executor for the real layout."""
    names = contract_names()
    out: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for launch in launches:
        contract = task_env(layout, launch.task_id)
        inherit: dict[str, str] = {}
        overrides: dict[str, str] = {}
        for key, value in launch.env.items():
            if key in names:
                if key != "CAUCE_PROGRESS_FILE" and contract.get(key) != value:
                    overrides[key] = value
            elif (
                key.startswith("CAUCE_")
                or key in _STORAGE
                or (key not in _DRIVER_ONLY and os.environ.get(key) != value)
            ):
                inherit[key] = value
        out[launch.task_id] = (inherit, overrides)
    return out
