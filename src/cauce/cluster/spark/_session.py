"""The one Spark application of this process, shared by every Spark cluster object in it.

A process has at most one SparkContext. Each :class:`~cauce.cluster.spark.SparkCluster` (one per
driver, so one per thread when a tuner runs trials side by side) holds a reference; the session
cauce started is stopped when the last one is released. A session that was already running (a
notebook's, say) is used as it is and left running.

Also here: the slots cauce's own reservations hold, so that two gangs of one process never both
count the same free slots (what the executors have is read by ``_executors``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from cauce.cluster.api import DriverAddress
from cauce.cluster.spark import _address
from cauce.cluster.spark._classes import class_archive
from cauce.cluster.spark._executors import Executor, first_line, read_executors
from cauce.errors import CauceError, ClusterError

__all__ = ["SharedSpark", "acquire", "first_line", "spark_session"]

logger = logging.getLogger(__name__)

#: Settings cauce gives a Spark application it starts for gangs, unless told otherwise.
DEFAULTS = {
    # One FAIR pool per gang, so that gangs of one process (a tuner's trials) share the cluster.
    "spark.scheduler.mode": "FAIR",
    # Spark's progress bar would garble the tasks' lines on the console.
    "spark.ui.showConsoleProgress": "false",
}

#: A driver that only this host's executors reach.
_LOOPBACK = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


def _check_master(master: str) -> None:
    """Fail fast, with a clear message, when no standalone master answers (Spark would retry
    for a minute and then stop the context)."""
    if not master.startswith("spark://"):
        return
    problems = []
    for part in master[len("spark://") :].split(","):
        host, _, port = part.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=5.0):
                return
        except (OSError, ValueError) as exc:
            problems.append(f"{part}: {exc}")
    raise ClusterError(f"cannot reach the Spark master {master}: {'; '.join(problems)}")


class SharedSpark:
    """The session, who uses it, and the task slots cauce's gangs have reserved in it."""

    _lock = threading.Lock()
    _current: SharedSpark | None = None

    def __init__(self, master: str, session: Any, owned: bool) -> None:
        self.master = master
        self.session = session
        self.sc = session.sparkContext
        self.owned = owned
        self.users = 0
        self.reserved: dict[str, int] = {}  # job_id -> task slots
        self.profiles: dict[tuple[int, int], Any] = {}
        #: Where executors reach this driver (see ``_address``); set as the session starts.
        self.driver = DriverAddress("127.0.0.1", "127.0.0.1")

    def _settle_driver(self, chosen: DriverAddress | None) -> None:
        """cauce's choice, else what Spark chose (its ``spark.driver.host`` once running)."""
        if chosen is None:
            host = self.setting("spark.driver.host", "127.0.0.1")
            chosen = DriverAddress(self.setting("spark.driver.bindAddress", host), host)
        self.driver = chosen

    def setting(self, key: str, default: str = "") -> str:
        value = self.sc.getConf().get(key)
        return default if value is None else str(value)

    def stopped(self) -> bool:
        try:
            return bool(self.sc._jsc.sc().isStopped())
        except Exception:  # py4j: the JVM itself is gone
            return True

    def release(self) -> None:
        with SharedSpark._lock:
            self.users -= 1
            if self.users > 0:
                return
            if SharedSpark._current is self:
                SharedSpark._current = None
            if self.owned:
                try:
                    self.session.stop()
                except Exception as exc:  # stopping a context whose JVM died is not an error
                    logger.debug("stopping the Spark session: %s", exc)

    def executors(self) -> list[Executor]:
        """The application's live executors (the driver itself in ``local[N]`` mode)."""
        return read_executors(self.sc, self.master)

    def free_slots(self, cpus: int, gpus: int) -> tuple[int, int, list[Executor]]:
        """(slots for tasks of this shape, of which free, executors): a slot is what one task
        with ``cpus`` cores and ``gpus`` GPUs takes; busy slots are the larger of the running
        tasks and those cauce's gangs in this process hold."""
        total, active, executors = self._capacity(cpus, gpus)
        with SharedSpark._lock:
            held = sum(self.reserved.values())
        return total, max(0, total - max(held, active)), executors

    def hold(self, job_id: str, tasks: int, cpus: int, gpus: int) -> bool:
        """Reserve ``tasks`` slots for a gang if they are free now (or it holds them already)."""
        total, active, _ = self._capacity(cpus, gpus)
        with SharedSpark._lock:
            if job_id in self.reserved:
                return True
            held = sum(self.reserved.values())
            if total - max(held, active) < tasks:
                return False
            self.reserved[job_id] = tasks
            return True

    def unhold(self, job_id: str) -> None:
        with SharedSpark._lock:
            self.reserved.pop(job_id, None)

    def _capacity(self, cpus: int, gpus: int) -> tuple[int, int, list[Executor]]:
        executors = self.executors()
        total = 0
        for ex in executors:
            fit = ex.cores // cpus
            if gpus:
                fit = min(fit, len(ex.gpus) // gpus)
            total += fit
        return total, sum(ex.active_tasks for ex in executors), executors

    def profile(self, cpus: int, gpus: int) -> Any:
        """A task resource profile (stage-level scheduling) for tasks of this shape, or None
        when the application's defaults already are that shape."""
        default_cpus = int(self.setting("spark.task.cpus", "1"))
        default_gpus = float(self.setting("spark.task.resource.gpu.amount", "0"))
        if cpus == default_cpus and math.isclose(gpus, default_gpus):
            return None
        with SharedSpark._lock:
            if (cpus, gpus) in self.profiles:
                return self.profiles[(cpus, gpus)]
        from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

        requests = TaskResourceRequests().cpus(cpus)
        if gpus:
            requests = requests.resource("gpu", gpus)
        try:
            built = ResourceProfileBuilder().require(requests).build
        except Exception as exc:  # py4j errors
            raise ClusterError(
                f"Spark refused a task profile of {cpus} CPUs and {gpus} GPUs: {first_line(exc)}"
            ) from exc
        with SharedSpark._lock:
            return self.profiles.setdefault((cpus, gpus), built)


def acquire(master: str, conf: Mapping[str, str]) -> SharedSpark:
    """The process's session for ``master``, started with ``conf`` if there is none yet."""
    with SharedSpark._lock:
        shared = SharedSpark._current
        if shared is not None and shared.stopped():
            shared = SharedSpark._current = None
        if shared is None:
            shared = _start(master, conf)
            SharedSpark._current = shared
        elif shared.master != master:
            raise ClusterError(
                f"this process already runs a Spark application on {shared.master}; "
                f"cauce cannot start another one on {master} (one SparkContext per process)"
            )
        else:
            _warn_ignored(shared, conf)
        shared.users += 1
        return shared


def _start(master: str, conf: Mapping[str, str]) -> SharedSpark:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkContext._active_spark_context
    if active is not None:
        if active.master != master:
            raise ClusterError(
                f"this process already runs a Spark application on {active.master}; "
                f"cauce cannot start another one on {master} (one SparkContext per process)"
            )
        shared = SharedSpark(master, SparkSession.builder.getOrCreate(), owned=False)
        _warn_ignored(shared, conf)
        own = {k: v for k, v in conf.items() if k == _address.KEY}
        found = (
            _address.resolve(master, own, os.environ) if own or _address.ENV in os.environ else None
        )
        shared._settle_driver(found[0] if found else None)
        return shared
    _check_master(master)
    found = _address.resolve(master, conf, os.environ)
    conf = {**conf, **_driver_conf(found[0] if found else None, conf)}
    try:
        session = spark_session(master, "cauce", {**DEFAULTS, **conf})
    except CauceError:
        raise
    except Exception as exc:  # py4j and PySpark errors, a JVM that cannot start...
        raise ClusterError(
            f"cannot start a Spark application on {master}: {first_line(exc)}"
        ) from exc
    _quiet_pools(session)
    python = conf.get("spark.pyspark.python")
    if python:
        # Spark's documented meaning ("the Python of the driver and the executors", over
        # $PYSPARK_PYTHON); PySpark itself reads only the variable when it is not spark-submit
        # that started this process.
        session.sparkContext.pythonExec = python
    shared = SharedSpark(master, session, owned=True)
    shared._settle_driver(found[0] if found else None)
    _address.announce(shared.driver, found[1] if found else "Spark's choice", master)
    return shared


def _driver_conf(chosen: DriverAddress | None, conf: Mapping[str, str]) -> dict[str, str]:
    """Spark's driver address settings for cauce's choice, where ``conf`` leaves them open."""
    if chosen is None:
        return {}
    out = {"spark.driver.host": conf.get("spark.driver.host") or chosen.advertised}
    if chosen.bind != out["spark.driver.host"]:
        out["spark.driver.bindAddress"] = chosen.bind
    return out


def spark_session(
    master: str,
    app_name: str,
    conf: Mapping[str, str],
    *,
    loopback: bool = False,
    log: str | os.PathLike[str] | None = None,
    record_classes: bool = False,
) -> Any:
    """This process's SparkSession on ``master`` (PySpark's ``getOrCreate``): named
    ``app_name``, with ``conf`` over that. ``loopback`` keeps a ``local[N]`` driver on 127.0.0.1
    (unless ``conf`` says otherwise), for the sessions that data preparation and batch scoring
    start on this host. ``log``: when this call starts the process's JVM, the JVM writes its
    output (Spark's log) to this file, not to this process's terminal.

    A JVM this starts for a ``local[N]`` master maps the machine's archive of Spark's classes
    (``_classes``); if there is none yet and ``record_classes``, it is started so that
    :func:`~cauce.cluster.spark.save_classes`, called when the work is done, can make it.
    Raises what PySpark raises, and SpecError for a bad ``CAUCE_CLASS_ARCHIVE``."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    settings = dict(_LOOPBACK) if loopback and master.startswith("local") else {}
    settings.update(conf)
    # PySpark starts one JVM per process, on first use, and keeps it (SparkContext._gateway).
    starting = getattr(SparkContext, "_gateway", None) is None
    archive = (
        class_archive(master, settings, record=record_classes, environ=os.environ)
        if starting
        else None
    )
    if archive is not None:
        key = "spark.driver.extraJavaOptions"
        settings[key] = archive.java_options(settings.get(key))
    if log is not None and starting:
        from pyspark.java_gateway import launch_gateway

        spark_conf = (
            SparkConf().setMaster(master).setAppName(app_name).setAll(list(settings.items()))
        )
        with open(log, "ab") as out:  # the JVM keeps its own descriptor
            popen = {"stdout": out, "stderr": out}
            gateway = launch_gateway(spark_conf, popen_kwargs=popen)  # type: ignore[no-untyped-call]
        SparkContext(conf=spark_conf, gateway=gateway)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if archive is not None:
        archive.started(session)
    return session


def _quiet_pools(session: Any) -> None:
    """Each gang's FAIR pool is made on the fly, which Spark's scheduler logs as a warning per
    gang ("... has not been configured"); only errors of that logger are shown."""
    try:
        log4j = session.sparkContext._jvm.org.apache.logging.log4j
        log4j.core.config.Configurator.setLevel(
            "org.apache.spark.scheduler.FairSchedulableBuilder", log4j.Level.ERROR
        )
    except Exception as exc:  # another logging backend: the warnings stay, nothing breaks
        logger.debug("cannot quiet the pool warnings: %s", exc)


def _warn_ignored(shared: SharedSpark, conf: Mapping[str, str]) -> None:
    for key, value in conf.items():
        if key.startswith("spark.cauce."):
            continue
        current = shared.sc.getConf().get(key)
        if current != value:
            logger.warning(
                "Spark setting %s=%s not applied: this process's Spark application already "
                "runs with %s",
                key,
                value,
                current,
            )
