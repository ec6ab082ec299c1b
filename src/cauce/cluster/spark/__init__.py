"""The ``spark`` cluster: gangs as barrier stages of a Spark application.

``spark://HOST:PORT`` (standalone), ``yarn``, ``k8s://...`` and ``local[N]`` are Spark masters;
this process's Spark application (started on first use, shared by every driver of the process,
stopped when the last one closes) runs each attempt of a gang as one barrier stage with a task
per gang task (see ``_gang`` for the driver's side, ``_task`` for the executors').

Resources: every task of a stage gets the same resources from Spark, ``cpus`` rounded up to
whole cores and ``gpus`` GPUs (stage-level scheduling when that differs from the application's
``spark.task.cpus`` / ``spark.task.resource.gpu.amount``); a gang whose roles need different GPU
counts is refused. Before submitting, the gang is compared with the executors' free slots: while
it does not fit the answer is :class:`Waiting` ("needs 4 task slots, 2 free"), and after
``spark.cauce.placementTimeout`` seconds (default 120) it fails with :class:`PlacementError`.
Each restart checks the free slots again (:meth:`Reservation.renew`), and the same timeout bounds
Spark's own barrier slot check (``barrier_check_settings``).

Hosts that fail: the driver and each task ping each other over their link; a task silent for
``spark.cauce.linkTimeout`` seconds (default 20) is lost (the root cause names its host), and a
task that hears nothing from the driver for as long, or sees its link close, stops its command.

Local sessions (``local[N]``: data preparation, batch scoring, the evaluate step's baselines)
start faster with the machine's archive of Spark's classes (``_classes``), which the first
scoring session makes.

Settings: ``conf`` (the spec's ``spark:`` and ``cauce run --conf``) applies when this process
starts its Spark application; ``spark.cauce.*`` keys are read per cluster object.
"""

from cauce.cluster.spark._classes import save_classes
from cauce.cluster.spark._cluster import (
    DEFAULT_LINK_TIMEOUT,
    DEFAULT_PLACEMENT_TIMEOUT,
    PLACEHOLDER_GPU,
    PLACEHOLDER_HOST,
    SparkCluster,
    parse_duration,
    task_shape,
)
from cauce.cluster.spark._doctor import Check, doctor
from cauce.cluster.spark._session import spark_session

__all__ = [
    "DEFAULT_LINK_TIMEOUT",
    "DEFAULT_PLACEMENT_TIMEOUT",
    "PLACEHOLDER_GPU",
    "PLACEHOLDER_HOST",
    "Check",
    "SparkCluster",
    "doctor",
    "parse_duration",
    "save_classes",
    "spark_session",
    "task_shape",
]
