"""Shared fixtures: an isolated cauce home per test, and a check that no test leaks a process."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helpers import SESSION_GROUPS, running

#: Fixtures shared by several test modules: the prepared flights dataset (``flights``), the
#: Spark standalone cluster (``spark_cluster``), a PostgreSQL server (``postgres``) and a cauce
#: home for in-process runs (``home``).
pytest_plugins = [
    "flights_fixtures",
    "mlflow_fixtures",
    "multihost_fixtures",
    "postgres_fixtures",
    "scheduling",
    "spark_fixtures",
    "ui_fixtures",
]

_CAUCE_VARS = ("CAUCE_HOME", "CAUCE_HISTORY", "CAUCE_CLUSTER", "CAUCE_GPUS", "CAUCE_LEASE_DIR")


# Under pytest-xdist (scripts/test.sh runs two workers) the multi-host clusters of two workers
# may be up at once (the session's on one, a module's own on the other: scheduling.py keeps the
# tests of each on one worker), so each worker names its namespaces and subnets its own way.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and "CAUCE_MULTIHOST_TAG" not in os.environ:
    os.environ["CAUCE_MULTIHOST_TAG"] = f"x{int(_WORKER[2:])}"
    os.environ["CAUCE_MULTIHOST_INDEX"] = str(20 * int(_WORKER[2:]))


@pytest.fixture
def cauce_env(tmp_path: Path) -> dict[str, str]:
    """An environment for running the `cauce` CLI in a subprocess, isolated in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k not in _CAUCE_VARS}
    env["CAUCE_HOME"] = str(tmp_path / "home")
    env["CAUCE_LEASE_DIR"] = str(tmp_path / "leases")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(autouse=True)
def no_kept_batches() -> Iterator[None]:
    """Drop what ``cauce.data.shard`` kept in memory (its cache across epochs) after each test:
    a test's datasets are gone after it, and the process's memory should not grow."""
    yield
    cache = sys.modules.get("cauce.data._cache")
    if cache is not None:
        cache.CACHE.clear()


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _lineage(proc: psutil.Process) -> list[psutil.Process]:
    """The process and its ancestors (none if it has ended)."""
    try:
        return [proc, *proc.parents()]
    except psutil.NoSuchProcess:
        return []


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:80]}"
    except psutil.NoSuchProcess:
        return f"{proc.pid} (ended meanwhile)"


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves a child process (or one of its descendants) alive."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 30.0  # a process that is ending may be slow to, on a busy host
    while True:
        left = [
            p
            for p in me.children(recursive=True)
            if p.pid not in before
            and running(p.pid)  # a descendant may have been reaped since it was listed
            # a server a session fixture started during this test: it lives on, for the session,
            # and so do its own processes (PostgreSQL puts each in a group of its own)
            and not any(_group(q.pid) in SESSION_GROUPS for q in _lineage(p))
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        names = ", ".join(_describe(p) for p in left)
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        pytest.fail(f"test left processes alive: {names}")
