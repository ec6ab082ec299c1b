"""A cluster's lifetime: ``open_cluster`` resolves the address and closes the cluster once."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

import psutil
import pytest

import cauce
from cauce.cluster import TaskExit, TaskLaunch, cluster_address, open_cluster
from cauce.cluster.local import LocalCluster
from cauce.errors import SpecError
from cauce.frameworks import GangLayout, TaskSlot


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAUCE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAUCE_LEASE_DIR", str(tmp_path / "leases"))
    monkeypatch.delenv("CAUCE_CLUSTER", raising=False)
    return tmp_path


def test_address_is_the_argument_then_the_spec_then_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del home
    plain = cauce.parse_job({"command": "true"})
    pinned = cauce.parse_job({"command": "true", "cluster": "spark://h:7077"})
    assert cluster_address(None) == "local"
    assert cluster_address(None, plain) == "local"
    monkeypatch.setenv("CAUCE_CLUSTER", "yarn")
    assert cluster_address(None, plain) == "yarn"
    assert cluster_address(None, pinned) == "spark://h:7077"
    assert cluster_address("local[2]", pinned) == "local[2]"


def _run_one_task(cluster: LocalCluster, tmp_path: Path) -> int:
    """Start a one-task gang that exits at once; returns its exit code."""
    slot = TaskSlot("worker-0", "worker", 0, "127.0.0.1", 0)
    layout = GangLayout("j", "j", "none", 0, 0, (slot,))
    launch = TaskLaunch(
        "worker-0", (sys.executable, "-c", "pass"), {}, str(tmp_path), str(tmp_path / "w.log")
    )
    done = threading.Event()
    exits: list[TaskExit] = []

    def on_exit(exit: TaskExit) -> None:
        exits.append(exit)
        done.set()

    running = cluster.start(layout, [launch], lambda task, line: None, on_exit)
    assert done.wait(60)
    running.stop(grace=5)
    return exits[0].returncode


def _reapers() -> list[psutil.Process]:
    """This process's reaper children. Only those: under xdist, other children of this process
    may come and go meanwhile (see _pool_processes in test_tune_study.py)."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):  # ended since it was listed
            if "_reaper.py" in " ".join(child.cmdline()):
                found.append(child)
    return found


def test_the_cluster_is_closed_when_the_block_ends(home: Path) -> None:
    before = {p.pid for p in _reapers()}
    with open_cluster(None) as cluster:
        assert isinstance(cluster, LocalCluster)
        assert _run_one_task(cluster, home) == 0
        helpers = [p for p in _reapers() if p.pid not in before]
        assert helpers, "the local cluster keeps a reaper process while it is open"
    gone, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive and gone
    cluster.close()  # idempotent: a second close does nothing


def test_the_cluster_is_closed_when_the_block_fails(home: Path) -> None:
    before = {p.pid for p in _reapers()}
    with pytest.raises(RuntimeError, match="boom"), open_cluster("local") as cluster:
        assert isinstance(cluster, LocalCluster)
        _run_one_task(cluster, home)
        helpers = [p for p in _reapers() if p.pid not in before]
        raise RuntimeError("boom")
    assert helpers
    gone, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive and gone


def test_spec_gives_spark_settings_and_a_mapping_too(home: Path) -> None:
    del home
    pytest.importorskip("pyspark")
    from cauce.cluster.spark import SparkCluster

    spec = cauce.parse_job(
        {
            "command": "true",
            "cluster": "spark://127.0.0.1:1",
            "spark": {"spark.cauce.placementTimeout": "2m"},
        }
    )
    with open_cluster(None, spec) as cluster:  # lazy: nothing is started, nothing to reach
        assert isinstance(cluster, SparkCluster)
        assert (cluster.master, cluster.placement_timeout) == ("spark://127.0.0.1:1", 120.0)
    settings = {"spark.cauce.placementTimeout": "90s"}
    with open_cluster("local[2]", settings) as cluster:
        assert isinstance(cluster, SparkCluster) and cluster.placement_timeout == 90.0


def test_an_unknown_address_fails_before_the_block(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address that does not parse is a spec error (exit 2), as in a job file, whether it
    is given or comes from $CAUCE_CLUSTER; the cluster is never opened."""
    del home
    entered = False
    with (
        pytest.raises(SpecError, match=r"^cluster must be 'local', .*, got 'mesos://m'$"),
        open_cluster("mesos://m"),
    ):
        entered = True
    assert not entered
    monkeypatch.setenv("CAUCE_CLUSTER", "spark://master")
    with pytest.raises(SpecError, match=r"^\$CAUCE_CLUSTER must name the Spark master as"):
        cluster_address(None)
    assert SpecError.exit_code == 2
