"""One attempt of a gang on Spark, seen from the driver: a barrier job and its tasks' links.

The driver opens a server for the attempt (``_links``), submits one barrier stage with a
task per gang task (in a thread, under a job group and a FAIR pool of its own) and watches it:
if Spark has not started every task within the placement timeout, the attempt is cancelled and
fails with the reason in the tasks' logs. ``stop`` asks every task to stop (SIGTERM, grace,
SIGKILL on the executor), waits for their exits, then cancels the job group, which kills the
Python workers and, through their reapers, whatever is left of the commands.

The watcher also keeps the links alive (``TaskLinks.check_links``): a task whose link is silent
for ``link_timeout`` seconds is lost, which the driver's state machine takes as a failure. A
stop that comes before the job is submitted keeps it from being submitted, and the job group is
cancelled with its future jobs, so that a job still in Spark's barrier slot check (resubmitted
every ``spark.scheduler.barrier.maxConcurrentTasksCheck.interval``) is cancelled too.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cauce.cluster.api import OutputSink, RunningGang, TaskExit, TaskLaunch, TaskPlace
from cauce.cluster.spark._links import DEFAULT_LINK_TIMEOUT, LOST, TaskLinks
from cauce.cluster.spark._session import first_line
from cauce.cluster.spark._task import run_partition
from cauce.frameworks.api import GangLayout

__all__ = ["GangSubmission", "SparkGang"]

logger = logging.getLogger(__name__)

_TICK = 0.2
#: Seconds a job whose tasks all reported an exit gets to end before it is cancelled.
_SETTLE = 10.0


@dataclass(frozen=True)
class GangSubmission:
    """What the cluster decided for one attempt, besides the launches."""

    sc: Any  # pyspark.SparkContext
    profile: Any  # pyspark.resource.ResourceProfile | None
    bind_host: str  # where the driver listens
    advertised_host: str  # where executors reach it
    grace: float
    placement_timeout: float
    strip: frozenset[str]  # contract names never inherited
    #: task_id -> (variables inherited from the driver, contract variables the spec overrides)
    env: Mapping[str, tuple[dict[str, str], dict[str, str]]]
    describe_need: Callable[[], str]  # "needs 4 task slots, 2 free", for a placement timeout
    link_timeout: float = DEFAULT_LINK_TIMEOUT  # seconds of silence after which a task is lost


class SparkGang(RunningGang):
    def __init__(
        self,
        layout: GangLayout,
        launches: Sequence[TaskLaunch],
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        submission: GangSubmission,
    ) -> None:
        self._sub = submission
        self._links = TaskLinks(
            launches,
            submission.bind_host,
            on_output,
            on_exit,
            link_timeout=submission.link_timeout,
        )
        self._group = f"cauce-{layout.job_id}-{layout.attempt}"
        self._pool = f"cauce-{layout.job_id}"
        self._job_done = threading.Event()
        self._closed = threading.Event()
        self._job_error = ""
        self._placement_note = ""
        bundle = self._bundle(layout, launches)
        self._submitted = time.monotonic()
        self._watcher = threading.Thread(target=self._watch, name="cauce-spark-watch")
        self._watcher.daemon = True
        from pyspark.util import InheritableThread

        self._job = InheritableThread(self._run_job, args=(bundle, len(launches)), daemon=True)
        self._watcher.start()
        self._job.start()

    def _bundle(self, layout: GangLayout, launches: Sequence[TaskLaunch]) -> str:
        """Everything the barrier tasks need, as JSON."""
        tasks = []
        for launch in launches:
            inherit, overrides = self._sub.env[launch.task_id]
            tasks.append(
                {
                    "task_id": launch.task_id,
                    "argv": list(launch.argv),
                    "cwd": launch.cwd,
                    "inherit": inherit,
                    "overrides": overrides,
                    "progress": "CAUCE_PROGRESS_FILE" in launch.env,
                    "control": "CAUCE_CONTROL_FILE" in launch.env,
                }
            )
        slots = [
            {
                "task_id": s.task_id,
                "role": s.role,
                "index": s.index,
                "cpus": s.cpus,
                "tracked": s.tracked,
            }
            for s in layout.slots
        ]
        return json.dumps(
            {
                "token": self._links.token,
                "driver": [self._sub.advertised_host, self._links.port],
                "job_id": layout.job_id,
                "job_name": layout.job_name,
                "framework": layout.framework,
                "attempt": layout.attempt,
                "max_restarts": layout.max_restarts,
                "rendezvous": layout.rendezvous,
                "grace": self._sub.grace,
                "link_timeout": self._sub.link_timeout,
                "strip": sorted(self._sub.strip),
                "slots": slots,
                "tasks": tasks,
            }
        )

    # --- the barrier job ---------------------------------------------------------------------

    def _run_job(self, bundle: str, count: int) -> None:
        sc = self._sub.sc
        try:
            if self._links.stopping.is_set():
                return  # stopped before it was submitted: nothing to cancel, nothing runs
            sc.setLocalProperty("spark.scheduler.pool", self._pool)
            sc.setJobGroup(self._group, f"cauce gang {self._group}", interruptOnCancel=True)
            rdd = sc.parallelize(range(count), count).barrier()
            rdd = rdd.mapPartitions(functools.partial(run_partition, bundle))
            if self._sub.profile is not None:
                rdd = rdd.withResources(self._sub.profile)
            # Everything comes back over the tasks' connections, so the job only has to run:
            # count() on the JVM side, rather than collect(), whose result socket PySpark leaves
            # for the garbage collector to close (a ResourceWarning in every gang).
            rdd._jrdd.count()
        except Exception as exc:  # py4j and PySpark errors of every kind end the attempt alike
            self._job_error = first_line(exc)
            if not self._links.stopping.is_set():
                logger.warning("the Spark job of %s failed: %s", self._group, self._job_error)
        finally:
            self._job_done.set()
            self._job_ended()

    def _job_ended(self) -> None:
        """Tasks whose exit never came get one now, with a line in their log saying why."""
        self._links.join_readers(timeout=5.0)
        for task_id in self._links.unreported():
            runtime = self._links.runtime(task_id)
            if self._links.stopping.is_set() and runtime:
                note = f"cauce: {task_id} stopped after {runtime:.1f} s, its exit not reported"
                self._links.exit(task_id, -signal.SIGKILL, runtime, note)
            elif self._links.stopping.is_set():
                self._links.exit(task_id, -signal.SIGKILL, 0.0, "cauce: stopped before it ran")
            elif self._placement_note:
                self._links.exit(task_id, LOST, 0.0, self._placement_note)
            elif runtime:
                why = self._job_error or "its Spark task ended without reporting the exit"
                self._links.lose(task_id, why)
            else:
                why = self._job_error or (
                    "no word from it before its Spark task ended; can the executors reach the "
                    f"driver at {self._sub.advertised_host}? (see the executor's log)"
                )
                self._links.exit(
                    task_id, LOST, 0.0, f"cauce: {task_id} did not run on Spark: {why}"
                )

    # --- placement timeout and the control file ----------------------------------------------

    def _watch(self) -> None:
        while not self._closed.wait(_TICK):
            waiting = self._links.not_started()
            if waiting and not self._links.stopping.is_set() and not self._job_done.is_set():
                waited = time.monotonic() - self._submitted
                if waited > self._sub.placement_timeout:
                    self._placement_note = (
                        f"cauce: Spark did not start the gang within {waited:.0f} s "
                        f"(spark.cauce.placementTimeout is {self._sub.placement_timeout:g} s): "
                        f"{self._sub.describe_need()}"
                    )
                    self._cancel()
                    self._job.join(timeout=60.0)
            self._links.check_links()
            self._links.relay_control()

    # --- RunningGang -------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """Pids of the commands on their executors' hosts (those started so far)."""
        return self._links.pids()

    def places(self) -> dict[str, TaskPlace]:
        """Where each started task runs, as it reported at its start."""
        return self._links.places()

    def _cancel(self) -> None:
        if self._job_done.is_set():
            return
        cancel_group(self._sub.sc, self._group)

    def stop(self, grace: float) -> None:
        self._links.stopping.set()
        self._links.send_stop(grace)
        # Each task gives its command ``grace`` seconds, then SIGKILLs its group and reports.
        if self._links.wait_connected_exits(time.monotonic() + grace + 10.0) and not (
            self._links.lost()  # a lost task's Spark task may never end: cancel at once
        ):
            # Every command has ended and its task is returning: let the job end by itself
            # (a cancel now would only make Spark log the tasks as killed).
            self._job.join(timeout=_SETTLE)
        self._cancel()
        self._job.join(timeout=60.0)
        if self._job.is_alive():
            logger.warning("the Spark job of %s is still running after cancel", self._group)
        self._closed.set()
        self._watcher.join(timeout=5.0)
        self._links.close()


def cancel_group(sc: Any, group: str) -> None:
    """Cancel the job group's jobs, and those submitted to it later (Spark 4's
    ``cancelJobGroupAndFutureJobs``: a job that waits in the barrier slot check is resubmitted,
    not active, and a plain ``cancelJobGroup`` misses it); Spark 3.5 has only the plain one."""
    try:
        sc._jsc.sc().cancelJobGroupAndFutureJobs(group)
        return
    except Exception as exc:  # py4j: no such method (Spark 3.5), or the context is stopping
        logger.debug("cancelJobGroupAndFutureJobs(%s): %s", group, exc)
    try:
        sc.cancelJobGroup(group)
    except Exception as exc:  # the context may be stopping already: nothing left to cancel
        logger.debug("cancelJobGroup(%s): %s", group, exc)
