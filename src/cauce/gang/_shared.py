"""Paths a job gives that other hosts of its cluster cannot see: one warning line each, once the
job is placed (a Spark application's executors have registered by then), when the cluster has
several hosts (``Cluster.describe()``).

Checked: the checkpoint folder (``CAUCE_CHECKPOINT_DIR``, by default the run folder's
``checkpoints``, which the driver host holds) and every variable of the job's ``env:`` whose
value is an absolute path that exists here (a dataset, an output folder). A URI (``s3://...``,
``hdfs://...``) is shared storage and passes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from cauce.cluster.api import Cluster
from cauce.errors import ClusterError
from cauce.spec import JobSpec

__all__ = ["host_count", "local_path_warnings"]

log = logging.getLogger(__name__)

_SHARED = "on a cluster of several hosts use shared storage (s3://..., hdfs://...)"


def host_count(cluster: Cluster) -> int:
    """Distinct hosts among the cluster's (``describe()`` names executors ``HOST (executor
    N)``); 0 when the cluster cannot say now."""
    try:
        return len({capacity.host.split(" (", 1)[0] for capacity in cluster.describe()})
    except ClusterError as exc:
        log.debug("cannot count the cluster's hosts: %s", exc)
        return 0


def local_path_warnings(
    cluster: Cluster, spec: JobSpec, environ: Mapping[str, str], run_dir: Path
) -> list[str]:
    """One line per local path the job gives, if the cluster has more than one host."""
    job_env = dict(spec.env)
    checkpoints = job_env.get("CAUCE_CHECKPOINT_DIR") or environ.get("CAUCE_CHECKPOINT_DIR")
    checkpoints = checkpoints or str(run_dir / "checkpoints")
    found = [] if "://" in checkpoints else [f"checkpoint folder {checkpoints}"]
    for name, value in job_env.items():
        if name != "CAUCE_CHECKPOINT_DIR" and value.startswith("/") and os.path.exists(value):
            found.append(f"{name}={value}")
    if not found:
        return []
    hosts = host_count(cluster)
    if hosts < 2:
        return []
    return [f"{what} is local to the driver host; {_SHARED}" for what in found]
