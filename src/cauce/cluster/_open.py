"""Which cluster a job runs on, and how long it is held: the owner that opens one closes it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from cauce.cluster._warm import WarmStarts
from cauce.cluster.api import Cluster
from cauce.errors import ClusterError, SpecError
from cauce.spec import CLUSTER_PREFIXES, JobSpec, cluster_problem

__all__ = ["cluster_address", "get_cluster", "open_cluster"]


def cluster_address(address: str | None, spec: JobSpec | None = None) -> str:
    """The cluster to use: ``address`` when given, else the spec's ``cluster``, else
    ``$CAUCE_CLUSTER``, else ``local``. One that does not parse is a SpecError (exit 2), as
    in a job file."""
    chosen = address or (spec.cluster if spec is not None else None)
    where = "cluster"
    if not chosen:
        chosen, where = os.environ.get("CAUCE_CLUSTER") or "local", "$CAUCE_CLUSTER"
    problem = cluster_problem(chosen)
    if problem:
        raise SpecError(where, problem, value=chosen)
    return chosen


def get_cluster(
    address: str | None,
    *,
    spark_conf: Mapping[str, str] | None = None,
    warm: WarmStarts | None = None,
) -> Cluster:
    """A new cluster object for ``address``, which the caller owns and closes (``close()``);
    :func:`open_cluster` does both. ``None`` or ``"local"`` -> this host. Spark masters
    (``spark://HOST:PORT``, ``local[N]``, ``yarn``, ``k8s://...``) need the ``spark`` extra;
    ``spark_conf`` (``spark.*`` settings) applies to them and is ignored by the local cluster;
    ``warm``, the warm starts of ``preload:`` shared by several clusters, is the local cluster's
    (its owner closes it).
    """
    if not address or address == "local":
        from cauce.cluster._config import load_local_config
        from cauce.cluster.local import LocalCluster
        from cauce.history import cauce_home

        config = load_local_config(cauce_home())
        return LocalCluster(
            cpus=config.cpus, memory=config.memory, declared_gpus=config.gpus, warm=warm
        )
    if address.startswith(CLUSTER_PREFIXES):
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


@contextlib.contextmanager
def open_cluster(
    address: str | None,
    spec_or_conf: JobSpec | Mapping[str, str] | None = None,
    *,
    warm: WarmStarts | None = None,
) -> Iterator[Cluster]:
    """The cluster at ``address`` (resolved as :func:`cluster_address` says), closed once when
    the block ends. Given a job spec, its ``cluster`` is the default address and its ``spark:``
    the Spark settings; given a mapping, that mapping is the Spark settings. ``warm``: as
    :func:`get_cluster` takes it."""
    if isinstance(spec_or_conf, JobSpec):
        chosen, conf = cluster_address(address, spec_or_conf), dict(spec_or_conf.spark)
    else:
        chosen, conf = cluster_address(address), dict(spec_or_conf or {})
    cluster = get_cluster(chosen, spark_conf=conf, warm=warm)
    try:
        yield cluster
    finally:
        cluster.close()
