"""Shared fixtures: an isolated cauce home per test, and a check that no test leaks a process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helpers import SESSION_GROUPS

#: Fixtures shared by several test modules: the prepared flights dataset (``flights``), the
#: Spark standalone cluster (``spark_cluster``) and a cauce home for in-process runs (``home``).
pytest_plugins = [
    "flights_fixtures",
    "mlflow_fixtures",
    "multihost_fixtures",
    "spark_fixtures",
    "ui_fixtures",
]

_CAUCE_VARS = ("CAUCE_HOME", "CAUCE_HISTORY", "CAUCE_CLUSTER", "CAUCE_GPUS", "CAUCE_LEASE_DIR")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``-n 2 --dist loadgroup``, as scripts/test.sh runs the suite), keep the
    tests of each shared cluster on one worker: the multi-host clusters' namespaces have fixed
    names (two workers would build them twice and tear each other's down), and the standalone
    Spark cluster is started once per worker that needs it."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        node = item.nodeid
        if "multihost" in node or "multihost_cluster" in names:
            item.add_marker(pytest.mark.xdist_group("multihost"))
        elif "spark_cluster" in names or "[spark" in node or "test_spark_" in node:
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture
def cauce_env(tmp_path: Path) -> dict[str, str]:
    """An environment for running the `cauce` CLI in a subprocess, isolated in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k not in _CAUCE_VARS}
    env["CAUCE_HOME"] = str(tmp_path / "home")
    env["CAUCE_LEASE_DIR"] = str(tmp_path / "leases")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves a child process (or one of its descendants) alive."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 10.0
    while True:
        left = [
            p
            for p in me.children(recursive=True)
            if p.pid not in before
            and p.status() != psutil.STATUS_ZOMBIE
            # a server a session fixture started during this test: it lives on, for the session
            and _group(p.pid) not in SESSION_GROUPS
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        names = ", ".join(f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in left)
        for p in left:
            p.kill()
        pytest.fail(f"test left processes alive: {names}")
