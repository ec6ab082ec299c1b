"""The multi-host cluster of ``multihost`` as a session fixture: Spark master, workers, driver
and S3 store each on a host of its own (a Linux network namespace with its own address).

Skipped, with the reason, where namespaces cannot be made (not root, no iproute2) or Spark,
Java or moto is missing; never silently.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from multihost import MultiHost, Unavailable

WORKERS = 2


def start(workers: int = WORKERS, **kwargs: object) -> MultiHost:
    """A cluster that is up, or a skip that says why it cannot be."""
    pytest.importorskip("pyspark", reason="the multi-host cluster runs Spark: pip install pyspark")
    pytest.importorskip("moto", reason="the multi-host cluster's S3 store is moto's server")
    cluster = MultiHost(workers, **kwargs)  # type: ignore[arg-type]
    try:
        cluster.up()
    except Unavailable as exc:
        pytest.skip(f"no multi-host cluster on this machine: {exc}")
    return cluster


@pytest.fixture(scope="session", name="multihost_cluster")
def multihost_cluster_fixture() -> Iterator[MultiHost]:
    """A master (``cauce-m``), two workers (``cauce-w1``, ``cauce-w2``; 1 core, 1g and 2
    declared GPUs each), a driver host (``cauce-d``) and an S3 store (``cauce-s3``)."""
    cluster = start()
    try:
        yield cluster
    finally:
        cluster.down()
