"""What only the Spark cluster does: placement against the executors' slots and GPUs, waiting
and giving up, gangs from several threads at once, and the settings that reach it.

The first tests need no Spark at all; the others run on the standalone cluster of
``spark_fixtures`` through one Spark application kept open for the module.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cauce
from cauce.cluster import GangRequest, TaskRequest, get_cluster
from cauce.errors import ClusterError, PlacementError, SpecError
from cauce.history import open_store
from cauce.spec import Resources
from helpers import py
from spark_fixtures import (
    Console,
    HeldApp,
    StandaloneSpark,
    Target,
    held_app,
    job_file,
    run,
)

pytest.importorskip("pyspark")


def request(*gpus: int, cpus: float = 1.0) -> GangRequest:
    tasks = tuple(
        TaskRequest(f"worker-{i}", "worker", i, Resources(cpus=cpus, gpus=n))
        for i, n in enumerate(gpus)
    )
    return GangRequest("job", tasks)


# --- without a cluster -------------------------------------------------------------------------


def test_spark_settings_in_the_spec_are_validated() -> None:
    spec = cauce.parse_job(
        {"command": "true", "spark": {"spark.executor.memory": "2g", "spark.cores.max": 4}}
    )
    assert spec.spark == (("spark.executor.memory", "2g"), ("spark.cores.max", "4"))
    with pytest.raises(SpecError, match=r"key 'executor.memory' is not a Spark setting"):
        cauce.parse_job({"command": "true", "spark": {"executor.memory": "2g"}})
    with pytest.raises(SpecError, match=r"spark must be a mapping"):
        cauce.parse_job({"command": "true", "spark": ["spark.a=1"]})
    with pytest.raises(SpecError, match=r"spark.a must be a string or number"):
        cauce.parse_job({"command": "true", "spark": {"spark.a": [1]}})


def test_spark_cluster_is_lazy_and_checks_its_settings() -> None:
    from cauce.cluster.spark import SparkCluster, task_shape

    cluster = get_cluster("spark://127.0.0.1:1", spark_conf={"spark.cauce.placementTimeout": "2m"})
    assert isinstance(cluster, SparkCluster) and cluster.placement_timeout == 120.0
    cluster.close()  # nothing was started
    cluster = SparkCluster("yarn", {"spark.cauce.linkTimeout": "1h30m"})  # as in a job file
    assert cluster.link_timeout == 5400.0
    cluster.close()
    with pytest.raises(SpecError, match=r"spark.cauce.placementTimeout must be a duration"):
        SparkCluster("yarn", {"spark.cauce.placementTimeout": "soon"})
    assert task_shape(request(2, 2, cpus=1.5)) == (2, 2)
    with pytest.raises(PlacementError, match=r"different GPU counts \(worker 0, worker 1\)"):
        task_shape(request(1, 0))


def test_unreachable_master_fails_fast() -> None:
    cluster = get_cluster("spark://127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"cannot reach the Spark master spark://127.0.0.1:1"):
        cluster.check(request(0))
    assert time.monotonic() - started < 30  # not Spark's minute of retries
    cluster.close()


# --- on the standalone cluster -----------------------------------------------------------------


@pytest.fixture(scope="module")
def app(spark_cluster: StandaloneSpark) -> Iterator[HeldApp]:
    yield from held_app(spark_cluster)


@pytest.fixture
def target(app: HeldApp) -> Target:
    return Target("spark", app.cluster.master, app.cluster)


def test_describe_and_refusals_at_once(app: HeldApp) -> None:
    cluster = get_cluster(app.cluster.master)
    try:
        hosts = cluster.describe()
        assert len(hosts) == 2
        assert all(h.cpus == 1 and h.gpus == ("0", "1") for h in hosts), hosts
        with pytest.raises(PlacementError, match="needs 3 GPUs per task, and this Spark"):
            cluster.check(request(3))
        cluster.check(request(2, 2))
    finally:
        cluster.close()


def test_gang_larger_than_the_cluster_fails_after_the_timeout(target: Target, home: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PlacementError) as caught:
        run(
            target,
            home,
            f"""
            name: too-big
            command: {py("exit_with.py", 0)}
            roles:
              worker: {{instances: 3}}
            spark: {{spark.cauce.placementTimeout: 4}}
            """,
        )
    waited = time.monotonic() - started
    assert 4 <= waited < 60  # near the 4 s timeout; a busy host may be slow to cancel
    message = str(caught.value)
    # the wait as measured: 4 s, or more when the checks a second apart ran late on a busy host
    found = re.search(r"after (\d+) s \(spark\.cauce\.placementTimeout\)", message)
    assert found and int(found[1]) >= 4, message
    assert "needs 3 task slots, 2 free (2 executors, 2 slots in all)" in message


def test_mixed_gpu_roles_are_refused_before_anything_runs(target: Target, home: Path) -> None:
    with pytest.raises(PlacementError, match="roles need different GPU counts"):
        run(
            target,
            home,
            f"""
            name: mixed
            command: {py("exit_with.py", 0)}
            roles:
              worker: {{instances: 1, resources: {{gpus: 1}}}}
              helper: {{instances: 1}}
            """,
        )


def test_dry_run_shows_where_a_probe_stage_lands(target: Target, home: Path) -> None:
    """Spark decides where tasks run as they start: the dry run asks it, with a probe stage of
    the gang's shape, and shows those hosts, ports and GPUs, saying that the real run may go
    elsewhere."""
    path = job_file(
        home.parent,
        f"""
        name: plan
        framework: pytorch
        command: {py("exit_with.py", 0)}
        roles:
          worker: {{instances: 2, resources: {{gpus: 1}}}}
        """,
    )
    text = cauce.plan(path, cluster=target.address, home=home)
    assert f"on cluster spark ({target.address})" in text
    shown = re.findall(r"worker-\d: host (\S+) port (\d+) gpus (\S+) ", text)
    assert [host for host, _, _ in shown] == ["127.0.0.1", "127.0.0.1"], text
    assert all(int(port) > 0 and gpus in ("0", "1") for _, port, gpus in shown), text
    assert f"MASTER_ADDR=127.0.0.1\n    MASTER_PORT={shown[0][1]}\n" in text
    assert "Spark places\n the real run itself" in text
    assert "inherited from this shell" not in text


def test_two_gangs_from_two_threads_share_the_cluster(
    app: HeldApp, target: Target, home: Path
) -> None:
    """One gang per thread, as a tuner runs trials: the first takes both slots, the second
    waits for them ("needs 2 task slots, 0 free"), then runs in its own FAIR pool."""
    consoles = [Console(), Console()]
    # A failure as its text: the exception itself, kept in this list, would be in a cycle
    # through its traceback's frame, freed (with whatever it holds) in a later test.
    results: list[cauce.JobResult | str] = ["did not end", "did not end"]
    marks, gate = home.parent / "marks", home.parent / "gate"

    def one(i: int) -> None:
        path = job_file(
            home.parent / f"g{i}",
            f"""
            name: gang{i}
            command: {py("exit_with.py", 0, "--when", gate)}
            roles:
              worker: {{instances: 2}}
            """,
        )
        try:
            results[i] = cauce.run(path, cluster=target.address, home=home, console=consoles[i])
        except BaseException as exc:
            results[i] = "".join(traceback.format_exception(exc))
        (marks / f"{i}").write_text(str(time.monotonic()))

    def until(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 120
        while not check() and time.monotonic() < deadline:
            time.sleep(0.1)

    marks.mkdir()
    for i in (0, 1):
        (home.parent / f"g{i}").mkdir()
    threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
    # The first gang's tasks hold both slots until the second gang waits for them (fixed
    # sleeps raced with a busy host: the second could place first, or after the first ended).
    threads[0].start()
    until(lambda: consoles[0].text.count(": starting, attempt") == 2)
    threads[1].start()
    until(lambda: "waiting: needs 2 task slots, 0 free" in consoles[1].text)
    gate.touch()
    for thread in threads:
        thread.join(timeout=180)
    assert all(isinstance(r, cauce.JobResult) and r.ok for r in results), results
    assert "waiting: needs 2 task slots, 0 free" in consoles[1].text
    ends = [float((marks / f"{i}").read_text()) for i in (0, 1)]
    assert ends[0] < ends[1]
    sc = app.held.session().sc
    for result in results:
        assert isinstance(result, cauce.JobResult)
        assert sc._jsc.sc().getPoolForName(f"cauce-{result.job_id}").isDefined()
    assert app.cluster.tasks_left() == []


CURVE = """
import sys, time
import cauce

x = float(cauce.context().params.get("x", 0.5))
for step in range(int(sys.argv[1])):
    cauce.report(step, loss=(x - 0.3) ** 2 + 1.0 / (step + 1))
    time.sleep(float(sys.argv[2]))
"""


def test_tune_runs_two_trials_at_a_time(app: HeldApp, target: Target, home: Path) -> None:
    pytest.importorskip("optuna")
    import cauce.tune

    script = home.parent / "curve.py"
    script.write_text(CURVE)
    path = job_file(
        home.parent,
        f"""
        name: study
        command: {json.dumps([sys.executable, str(script), "8", "0.25"])}
        roles:
          worker: {{instances: 1}}
        tune:
          objective: {{metric: loss, direction: min}}
          space:
            x: {{type: uniform, low: 0.0, high: 1.0}}
          trials: 4
          parallel: 2
          sampler: {{type: random, seed: 1}}
          pruner: {{type: none}}
        """,
    )
    history = f"sqlite:///{home.parent / 'history.db'}"
    result = cauce.tune.tune(path, cluster=target.address, home=home, history=history)
    assert result.ok, result
    assert sum(1 for t in result.trials if t.state == "complete") == 4
    store = open_store(history)
    try:
        jobs = [j for j in store.list_jobs(kind="trial") if j.started_at and j.ended_at]
    finally:
        store.close()
    assert len(jobs) == 4 and {j.cluster for j in jobs} == {f"spark ({target.address})"}
    spans = sorted((j.started_at, j.ended_at) for j in jobs if j.started_at and j.ended_at)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), spans
    assert app.cluster.tasks_left() == []
