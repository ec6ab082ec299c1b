"""The gang contract, one suite run unchanged against every cluster: ``local``, ``spark`` and
``multihost``.

Each test runs a real job: through ``cauce.run`` in this process on this host's processes, then
as a barrier stage on the Spark standalone cluster of ``spark_fixtures`` (a master and two
workers of one core and two declared GPUs each, on 127.0.0.1), then on the multi-host cluster of
``multihost_fixtures`` (the same shape, each worker a host of its own with its own address), by a
driver on its driver host (``multihost_gang``), where every gang of two tasks spans two hosts
(checked in the history after each job). Same job files, same assertions; only the cluster and
the plumbing to reach it differ. On Spark, no task process may be left under the workers.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psutil
import pytest

import cauce
import spark_fixtures
from cauce.gang import JobDriver
from cauce.history import JobStatus, open_store
from helpers import ROOT, py
from multihost import MultiHost
from multihost_gang import (
    MultiHostTarget,
    RemoteDriver,
    RemoteJob,
    s3_folder,
    s3_keys,
    tasks_left,
)
from spark_fixtures import (
    Console,
    StandaloneSpark,
    Target,
    held_app,
    job_file,
)

pytestmark = [pytest.mark.slow]

DDP = ROOT / "examples" / "ddp" / "train.py"


@pytest.fixture(scope="module", params=["local", "spark", "multihost"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The cluster under test. Module scope: pytest runs every local test, then every spark
    test, then every multihost one, with one Spark application kept warm for each cluster."""
    if request.param == "local":
        yield Target("local", "local")
        return
    if request.param == "multihost":
        cluster: MultiHost = request.getfixturevalue("multihost_cluster")
        remote = RemoteDriver(cluster)
        try:
            yield MultiHostTarget("multihost", cluster.master, None, cluster, remote)
        finally:
            remote.close()
        return
    standalone: StandaloneSpark = request.getfixturevalue("spark_cluster")
    for _ in held_app(standalone):
        yield Target("spark", standalone.master, standalone)


class Job(Protocol):
    """A job running in the background, on any target."""

    def stop(self, reason: str) -> None: ...
    def ask_to_stop(self, reason: str) -> None: ...
    def wait_reported(self, timeout: float) -> bool: ...
    def result(self, timeout: float = 600) -> tuple[cauce.JobResult, str]: ...
    def close(self) -> None: ...


class LocalJob:
    """A JobDriver in a thread of this process (local and spark targets)."""

    def __init__(self, target: Target, home: Path, job: Path, poll: float = 1.0) -> None:
        from cauce.cluster import get_cluster

        spec = cauce.load_job(job)
        self.reported = threading.Event()
        self.store = open_store(f"sqlite:///{home.parent / 'history.db'}")
        self.cluster = get_cluster(target.address, spark_conf=dict(spec.spark))  # its owner
        self.console = Console()
        self.driver = JobDriver(
            spec,
            self.cluster,
            self.store,
            home,
            console=self.console,
            poll_interval=poll,
            on_metrics=lambda rows: self.reported.set(),
        )
        self.results: list[cauce.JobResult] = []
        self.thread = threading.Thread(target=lambda: self.results.append(self.driver.run()))
        self.thread.start()

    def stop(self, reason: str) -> None:
        self.driver.stop(reason)

    def ask_to_stop(self, reason: str) -> None:
        self.driver.ask_to_stop(reason)

    def wait_reported(self, timeout: float) -> bool:
        return self.reported.wait(timeout)

    def result(self, timeout: float = 600) -> tuple[cauce.JobResult, str]:
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the driver did not end"
        [result] = self.results
        return result, self.console.text

    def close(self) -> None:
        self.driver.stop("test cleanup")
        self.thread.join(timeout=60)
        self.store.close()
        self.cluster.close()


def start(target: Target, home: Path, text: str, poll: float = 1.0) -> Job:
    path = job_file(home.parent, text)
    if isinstance(target, MultiHostTarget):
        return RemoteJob(target, home, path, poll)
    return LocalJob(target, home, path, poll)


def run(target: Target, home: Path, text: str) -> tuple[cauce.JobResult, Console]:
    """The job in ``text`` run to its end on ``target``: its result and what it printed."""
    if not isinstance(target, MultiHostTarget):
        return spark_fixtures.run(target, home, text)
    job = start(target, home, text)
    try:
        result, printed = job.result()
    finally:
        job.close()
    console = Console()
    console.lines.extend(printed.splitlines())
    assert target.cluster is not None
    assert tasks_left(target.cluster) == [], "task processes outlived the job on the workers"
    return result, console


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
            command: {py("exit_with.py", 3, "--after", 2, "--when", pids / "worker-0.pids")}
        """,
    )  # the trainer's 2 s count once the sleeper runs: tasks may start far apart (Spark, load)
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
    # Across hosts the checkpoints are on the shared store (S3), where a restart on any host
    # finds them; elsewhere in the job's run folder.
    shared = isinstance(target, MultiHostTarget)
    folder = s3_folder(target, "resume") if shared else ""
    env = f"env: {{CAUCE_CHECKPOINT_DIR: {folder}}}" if shared else ""
    result, console = run(
        target,
        home,
        f"""
        name: resume
        command: {py("trainer.py", "--epochs", 4, "--out", out, "--crash-epoch", 2)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 2, backoff: 0.2}}
        {env}
        """,
    )
    assert result.ok and result.restarts == 1, result.root_cause + console.text
    assert "worker-0 failed first (killed by SIGKILL" in console.text
    log = [json.loads(line) for line in (out / "worker-0.log.jsonl").read_text().splitlines()]
    assert log[0] == {"attempt": 0, "resumed_from": 0}
    assert {"attempt": 1, "resumed_from": 2} in log
    assert [e["epoch"] for e in log if "epoch" in e] == [0, 1, 2, 3]
    assert abs(float(log[-1]["weight"]) - (1.0 - 0.9 ** (4 * 5))) < 1e-9
    local = Path(result.run_dir) / "checkpoints"
    if shared:
        assert isinstance(target, MultiHostTarget) and target.cluster is not None
        assert s3_keys(target.cluster, folder)[-2:] == [
            "step-000000003/meta.json",
            "step-000000003/state.pkl",
        ]
        assert not local.exists(), "a checkpoint went to the driver host's run folder"
    else:
        assert (local / "step-000000003" / "meta.json").is_file()
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
    if target.name != "local":
        assert len(by_machine) == 2  # one task per executor: one core each


def test_stop_tears_the_gang_down(target: Target, home: Path) -> None:
    """What `cauce kill`, Ctrl-C and a tuner's stop do: the driver's StopRequested path."""
    pids = home.parent / "pids"
    job = start(
        target,
        home,
        f"""
        name: stopme
        command: {py("sleeper.py", pids, 300)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 3}}
        grace_period: 3
        """,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.glob("*.pids"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        files = list(pids.glob("*.pids"))
        assert len(files) == 2, "the tasks did not start"
        task_pids = [int(p) for f in files for p in f.read_text().split()]
        job.stop("stopped by the test")
        result, _ = job.result(timeout=60)
    finally:
        job.close()
    assert result.status == "killed" and result.restarts == 0
    assert gone(task_pids)
    if target.spark is not None:
        assert target.spark.tasks_left() == []
    if isinstance(target, MultiHostTarget) and target.cluster is not None:
        assert tasks_left(target.cluster) == []


def test_ask_to_stop_reaches_the_tasks(target: Target, home: Path) -> None:
    """A tuner's pruning: the driver's control file makes the tasks' next report raise
    TrialPruned (on Spark it is relayed to the executors, as the reports come back)."""
    out = home.parent / "out"
    job = start(
        target,
        home,
        f"""
        name: prune
        command: {py("trainer.py", "--epochs", 300, "--out", out)}
        roles:
          worker: {{instances: 2}}
        """,
        poll=0.2,
    )
    try:
        assert job.wait_reported(timeout=120), "no report reached the driver"
        asked = time.monotonic()  # from here: starting the gang may take long on a busy host
        job.ask_to_stop("pruned by the test")
        result, _ = job.result(timeout=60)
    finally:
        job.close()
    # The tasks ended by themselves (exit 0); a job told to stop ends as pruned (issue 14).
    assert result.status == JobStatus.PRUNED, result.root_cause
    assert time.monotonic() - asked < 60  # 300 epochs would take a minute and more
    epochs = [line for line in (out / "worker-1.log.jsonl").read_text().splitlines()]
    assert 1 <= len(epochs) < 300


def test_jax_two_processes(target: Target, home: Path) -> None:
    """``jax.distributed`` from cauce's coordinator variables: a sum across 2 processes."""
    pytest.importorskip("jax")
    out = home.parent / "out"
    result, console = run(
        target,
        home,
        f"""
        name: jax-psum
        framework: jax
        command: {py("jax_psum.py", "--out", out)}
        roles:
          worker: {{instances: 2}}
        """,
    )
    assert result.ok, result.root_cause + console.text
    results = [json.loads((out / f"jax-{p}.json").read_text()) for p in range(2)]
    assert [r["sum"] for r in results] == [3.0, 3.0]
    assert [(r["process"], r["processes"]) for r in results] == [(0, 2), (1, 2)]


def test_horovod_rendezvous_store_reached_by_every_rank(target: Target, home: Path) -> None:
    """Horovod's Gloo rendezvous, without Horovod: every rank reaches the key-value store the
    driver serves, puts its address and reads every other rank's, as Gloo's contexts do."""
    result, console = run(
        target,
        home,
        f"""
        name: rendezvous
        framework: horovod
        command: {py("host_probe.py", "--rendezvous")}
        roles:
          worker: {{instances: 2}}
        """,
    )
    assert result.ok, result.root_cause + console.text
    done = re.findall(
        r"\[worker-\d\] worker-\d: key-value exchange done, ranks on (\S+)", console.text
    )
    assert len(done) == 2 and done[0] == done[1], console.text
    if isinstance(target, MultiHostTarget) and target.cluster is not None:
        assert len(set(done[0].split(","))) == 2  # the two ranks are on two hosts
        driver = target.cluster.hosts[target.cluster.driver]
        assert console.text.count(f"rendezvous {driver}:") == 2, console.text
