"""Resource managers. ``get_cluster`` picks one by address and imports it lazily."""

from __future__ import annotations

from collections.abc import Mapping

from cauce.cluster.api import (
    Cluster,
    GangRequest,
    HostCapacity,
    Reservation,
    RunningGang,
    TaskExit,
    TaskLaunch,
    TaskRequest,
    Waiting,
)
from cauce.errors import ClusterError
from cauce.spec._parse import CLUSTER_PREFIXES as _CLUSTER_PREFIXES

__all__ = [
    "Cluster",
    "GangRequest",
    "HostCapacity",
    "Reservation",
    "RunningGang",
    "TaskExit",
    "TaskLaunch",
    "TaskRequest",
    "Waiting",
    "get_cluster",
]


def get_cluster(address: str | None, *, spark_conf: Mapping[str, str] | None = None) -> Cluster:
    """``None`` or ``"local"`` -> this host. Spark masters (``spark://HOST:PORT``,
    ``local[N]``, ``yarn``, ``k8s://...``) need the ``spark`` extra; ``spark_conf`` (``spark.*``
    settings) applies to them and is ignored by the local cluster.

    Close a Spark cluster (``close()``) when done: its Spark application stops with the last
    cluster object of the process that uses it.
    """
    if address in (None, "", "local"):
        from cauce.cluster._config import load_local_config
        from cauce.cluster.local import LocalCluster
        from cauce.history import cauce_home

        config = load_local_config(cauce_home())
        return LocalCluster(cpus=config.cpus, memory=config.memory, declared_gpus=config.gpus)
    assert address is not None
    if address.startswith(_CLUSTER_PREFIXES):
        try:
            import pyspark  # noqa: F401
        except ImportError:
            raise ClusterError(
                f"cluster {address!r} needs pyspark: pip install 'cauce[spark]'"
            ) from None
        from cauce.cluster.spark import SparkCluster

        return SparkCluster(address, spark_conf)
    raise ClusterError(
        f"unknown cluster {address!r}: use 'local', 'spark://HOST:PORT', 'local[N]', 'yarn' "
        "or 'k8s://...'"
    )
