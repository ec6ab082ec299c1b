"""The multi-host cluster of ``multihost`` as a session fixture: Spark master, workers, driver
and S3 store each on a host of its own (a Linux network namespace with its own address).

Skipped, with the reason, where namespaces cannot be made (not root, no iproute2) or Spark,
Java or moto is missing; never silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import multihost_net as net
from multihost import MultiHost, Unavailable

WORKERS = 2


def start(workers: int = WORKERS, **kwargs: object) -> MultiHost:
    """A cluster that is up, or a skip that says why it cannot be."""
    pytest.importorskip("pyspark", reason="the multi-host cluster runs Spark: pip install pyspark")
    pytest.importorskip("moto", reason="the multi-host cluster's S3 store is moto's server")
    # Several clusters can live side by side on one machine under different tags and subnets
    # (10.213.INDEX.0/24): CAUCE_MULTIHOST_TAG and CAUCE_MULTIHOST_INDEX choose them.
    kwargs.setdefault("tag", os.environ.get("CAUCE_MULTIHOST_TAG", ""))
    kwargs.setdefault("index", int(os.environ.get("CAUCE_MULTIHOST_INDEX", "0")))
    cluster = MultiHost(workers, **kwargs)  # type: ignore[arg-type]
    try:
        cluster.up()
    except Unavailable as exc:
        pytest.skip(f"no multi-host cluster on this machine: {exc}")
    return cluster


def bare_hosts(suffix: str, offset: int, workers: int) -> Iterator[net.Names]:
    """For a fixture (``yield from``): namespaced hosts without Spark (``s3``, ``w1``...), on
    a subnet of their own (the worker's tag and index, with ``suffix`` and ``offset``), or a
    skip that says why they cannot be made."""
    names = net.Names(
        os.environ.get("CAUCE_MULTIHOST_TAG", "") + suffix,
        int(os.environ.get("CAUCE_MULTIHOST_INDEX", "0")) + offset,
    )
    try:
        with net.made(names, workers):
            yield names
    except net.Unavailable as exc:
        pytest.skip(f"no namespaced hosts on this machine: {exc}")


@pytest.fixture(scope="session", name="multihost_cluster")
def multihost_cluster_fixture() -> Iterator[MultiHost]:
    """A master (``cauce-m``), two workers (``cauce-w1``, ``cauce-w2``; 1 core, 1g and 2
    declared GPUs each), a driver host (``cauce-d``) and an S3 store (``cauce-s3``)."""
    cluster = start()
    try:
        yield cluster
    finally:
        cluster.down()
