"""The gang contract, one suite run unchanged against every cluster: ``local`` and ``spark``.

Each test runs a real job through ``cauce.run`` in this process: on this host's processes, then
as a barrier stage on the Spark standalone cluster of ``spark_fixtures`` (a master and two
workers of one core and two declared GPUs each, on 127.0.0.1). Same job files, same assertions;
only the cluster address differs. On Spark, no task process may be left under the workers.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import cauce
from cauce.gang import JobDriver
from cauce.history import open_store
from helpers import ROOT, py
from spark_fixtures import (
    StandaloneSpark,
    Target,
    held_app,
    job_file,
    run,
)

pytestmark = [pytest.mark.slow]

DDP = ROOT / "examples" / "ddp" / "train.py"


@pytest.fixture(scope="module", params=["local", "spark"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The cluster under test. Module scope: pytest runs every local test, then every spark
    test, with one Spark application kept warm for them."""
    if request.param == "local":
        yield Target("local", "local")
        return
    standalone: StandaloneSpark = request.getfixturevalue("spark_cluster")
    for _ in held_app(standalone):
        yield Target("spark", standalone.master, standalone)


def gone(pids: list[int], within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_ddp_two_ranks(target: Target, home: Path) -> None:
    torch = pytest.importorskip("torch")
    out = home.parent / "out"
    result, console = run(
        target,
        home,
        f"""
        name: ddp
        framework: pytorch
        command: {json.dumps([sys.executable, str(DDP), "--steps", "40", "--out", str(out)])}
        roles:
          worker: {{instances: 2, resources: {{cpus: 1}}}}
        """,
    )
    assert result.ok, result.root_cause + console.text
    assert "parameters identical on all ranks: True" in console.text
    params = [torch.load(out / f"params-{rank}.pt") for rank in range(2)]
    assert torch.equal(params[0], params[1])
    losses = json.loads((out / "losses-0.json").read_text())
    assert losses[-1] < 0.2 * losses[0], losses


def test_tensorflow_multi_worker(target: Target, home: Path) -> None:
    pytest.importorskip("tensorflow")
    import numpy as np

    out = home.parent / "out"
    result, console = run(
        target,
        home,
        f"""
        name: tf-mwms
        framework: tensorflow
        command: {py("tf_mwms.py", "--out", out)}
        roles:
          chief: {{instances: 1}}
          worker: {{instances: 1}}
        """,
    )
    assert result.ok, result.root_cause + console.text
    first, second = (np.load(out / f"{task}.npy") for task in ("chief-0", "worker-0"))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, [1.5, -2.0, 0.5, 3.0, 0.25], atol=0.05)
    assert json.loads((out / "chief-0.json").read_text())["replicas"] == 2


# Scripts written for Kubeflow's Training Operator read only its names (docs/env-contract.md).
# A TFJob script reads TF_CONFIG alone: test_tensorflow_multi_worker above is one.


def test_kubeflow_pytorchjob_torchrun(target: Target, home: Path) -> None:
    pytest.importorskip("torch")
    out = home.parent / "out"
    script = Path(__file__).parent / "bin" / "kubeflow_torch.py"
    command = [sys.executable, "-m", "torch.distributed.run", str(script), "--out", str(out)]
    result, console = run(
        target,
        home,
        f"""
        name: kubeflow-torch
        framework: pytorch
        command: {json.dumps(command)}
        roles:
          worker: {{instances: 2}}
        """,
    )
    assert result.ok, result.root_cause + console.text
    found = [json.loads((out / f"torch-{rank}.json").read_text()) for rank in range(2)]
    assert found == [{"rank": rank, "world": 2, "sum": 3.0} for rank in range(2)]


def test_kubeflow_jaxjob(target: Target, home: Path) -> None:
    pytest.importorskip("jax")
    out = home.parent / "out"
    result, console = run(
        target,
        home,
        f"""
        name: kubeflow-jax
        framework: jax
        command: {py("kubeflow_jax.py", "--out", out)}
        roles:
          worker: {{instances: 2}}
        """,
    )
    assert result.ok, result.root_cause + console.text
    found = [json.loads((out / f"jax-{process}.json").read_text()) for process in range(2)]
    assert found == [{"process": p, "processes": 2, "sum": 3.0} for p in range(2)]


def test_root_cause_is_the_first_failed_task(target: Target, home: Path) -> None:
    pids = home.parent / "pids"
    result, console = run(
        target,
        home,
        f"""
        name: fails
        roles:
          worker:
            command: {py("sleeper.py", pids, 300)}
          trainer:
            command: {py("exit_with.py", 3, "--after", 2)}
        """,
    )
    assert result.status == "failed"
    assert result.root_cause.startswith("trainer-0 failed first (exit 3 after"), result.root_cause
    assert "trainer-0: something went wrong, exiting with 3" in result.root_cause  # the log tail
    assert "[trainer-0] trainer-0: starting, attempt 0" in console.text  # streamed live
    [pidfile] = pids.glob("*.pids")
    assert gone([int(p) for p in pidfile.read_text().split()]), "the sleeper outlived the gang"
    store = open_store(f"sqlite:///{home.parent / 'history.db'}")
    try:
        tasks = {t.task_id: t for t in store.get_tasks(result.job_id)}
    finally:
        store.close()
    assert tasks["trainer-0"].exit_code == 3 and tasks["trainer-0"].status == "failed"
    assert tasks["worker-0"].status == "stopped"


def test_restart_resumes_from_checkpoint(target: Target, home: Path) -> None:
    out = home.parent / "out"
    result, console = run(
        target,
        home,
        f"""
        name: resume
        command: {py("trainer.py", "--epochs", 4, "--out", out, "--crash-epoch", 2)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 2, backoff: 0.2}}
        """,
    )
    assert result.ok and result.restarts == 1, result.root_cause + console.text
    assert "worker-0 failed first (killed by SIGKILL" in console.text
    log = [json.loads(line) for line in (out / "worker-0.log.jsonl").read_text().splitlines()]
    assert log[0] == {"attempt": 0, "resumed_from": 0}
    assert {"attempt": 1, "resumed_from": 2} in log
    assert [e["epoch"] for e in log if "epoch" in e] == [0, 1, 2, 3]
    assert abs(float(log[-1]["weight"]) - (1.0 - 0.9 ** (4 * 5))) < 1e-9
    # The reports reached the history, the second attempt's from epoch 2 on.
    store = open_store(f"sqlite:///{home.parent / 'history.db'}")
    try:
        rows = store.get_metrics(result.job_id, "worker-1")
    finally:
        store.close()
    assert {(r.attempt, r.step) for r in rows if r.attempt == 1} == {
        (1, step) for step in range(10, 20)
    }


def test_each_task_gets_its_own_gpus(
    target: Target, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two GPUs per task: each task sees two ids, and no id is given twice on one machine
    (this host for local, one executor for Spark, whose workers each declare GPUs 0 and 1)."""
    monkeypatch.setenv("CAUCE_GPUS", "0,1,2,3")
    out = home.parent / "out"
    result, console = run(
        target,
        home,
        f"""
        name: gpus
        command: {py("dump_env.py", out)}
        roles:
          worker: {{instances: 2, resources: {{gpus: 2}}}}
        """,
    )
    assert result.ok, result.root_cause + console.text
    envs = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    by_machine: dict[str, list[str]] = {}
    for env in envs:
        gpus = env["CUDA_VISIBLE_DEVICES"].split(",")
        assert len(gpus) == 2, env["CUDA_VISIBLE_DEVICES"]
        machine = env.get("SPARK_LOG_URL_STDERR", "this host").split("&logType")[0]
        by_machine.setdefault(machine, []).extend(gpus)
    for machine, ids in by_machine.items():
        assert len(ids) == len(set(ids)), (machine, ids)
    if target.spark is not None:
        assert len(by_machine) == 2  # one task per executor: one core each


def test_stop_tears_the_gang_down(target: Target, home: Path) -> None:
    """What `cauce kill`, Ctrl-C and a tuner's stop do: the driver's StopRequested path."""
    pids = home.parent / "pids"
    spec = cauce.load_job(
        job_file(
            home.parent,
            f"""
            name: stopme
            command: {py("sleeper.py", pids, 300)}
            roles:
              worker: {{instances: 2}}
            restart: {{max_restarts: 3}}
            grace_period: 3
            """,
        )
    )
    from cauce.cluster import get_cluster

    store = open_store(f"sqlite:///{home.parent / 'history.db'}")
    cluster = get_cluster(target.address, spark_conf=dict(spec.spark))  # closed by its owner
    driver = JobDriver(spec, cluster, store, home)
    results: list[cauce.JobResult] = []
    thread = threading.Thread(target=lambda: results.append(driver.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.glob("*.pids"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        files = list(pids.glob("*.pids"))
        assert len(files) == 2, "the tasks did not start"
        task_pids = [int(p) for f in files for p in f.read_text().split()]
        driver.stop("stopped by the test")
        thread.join(timeout=60)
    finally:
        driver.stop("test cleanup")
        thread.join(timeout=60)
        store.close()
        cluster.close()
    assert not thread.is_alive()
    [result] = results
    assert result.status == "killed" and result.restarts == 0
    assert gone(task_pids, within=2)
    if target.spark is not None:
        assert target.spark.tasks_left() == []


def test_ask_to_stop_reaches_the_tasks(target: Target, home: Path) -> None:
    """A tuner's pruning: the driver's control file makes the tasks' next report raise
    TrialPruned (on Spark it is relayed to the executors, as the reports come back)."""
    out = home.parent / "out"
    spec = cauce.load_job(
        job_file(
            home.parent,
            f"""
            name: prune
            command: {py("trainer.py", "--epochs", 300, "--out", out)}
            roles:
              worker: {{instances: 2}}
            """,
        )
    )
    from cauce.cluster import get_cluster

    reported = threading.Event()
    store = open_store(f"sqlite:///{home.parent / 'history.db'}")
    cluster = get_cluster(target.address, spark_conf=dict(spec.spark))  # closed by its owner
    driver = JobDriver(
        spec,
        cluster,
        store,
        home,
        poll_interval=0.2,
        on_metrics=lambda rows: reported.set(),
    )
    results: list[cauce.JobResult] = []
    thread = threading.Thread(target=lambda: results.append(driver.run()))
    started = time.monotonic()
    thread.start()
    try:
        assert reported.wait(timeout=120), "no report reached the driver"
        driver.ask_to_stop("pruned by the test")
        thread.join(timeout=60)
    finally:
        driver.stop("test cleanup")
        thread.join(timeout=60)
        store.close()
        cluster.close()
    [result] = results
    assert result.ok, result.root_cause
    assert time.monotonic() - started < 60  # 300 epochs would take a minute and more
    epochs = [line for line in (out / "worker-1.log.jsonl").read_text().splitlines()]
    assert 1 <= len(epochs) < 300
