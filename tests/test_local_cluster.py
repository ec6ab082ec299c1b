"""The local cluster's resources and GPU leases; the last test starts real jobs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from cauce.cluster import GangRequest, TaskRequest, Waiting
from cauce.cluster._leases import GpuLeases, Lease
from cauce.cluster.local import LocalCluster
from cauce.errors import PlacementError, SpecError
from cauce.spec import Resources


def request(job: str, *gpus: int, cpus: float = 1.0, memory: int = 0) -> GangRequest:
    return GangRequest(
        job,
        tuple(
            TaskRequest(f"worker-{i}", "worker", i, Resources(cpus=cpus, memory=memory, gpus=n))
            for i, n in enumerate(gpus)
        ),
    )


def cluster(tmp_path: Path, gpus: tuple[str, ...] = ("0", "1", "2", "3")) -> LocalCluster:
    return LocalCluster(cpus=4, memory=8 * 2**30, gpus=gpus, lease_dir=str(tmp_path / "leases"))


def test_gpus_are_split_between_tasks_and_leased(tmp_path: Path) -> None:
    a = cluster(tmp_path)
    b = cluster(tmp_path)  # another driver on the same host
    first = a.try_reserve(request("a", 1, 2))
    assert not isinstance(first, Waiting)
    assert first.placements == {
        "worker-0": ("127.0.0.1", ("0",)),
        "worker-1": ("127.0.0.1", ("1", "2")),
    }
    second = b.try_reserve(request("b", 1, 1))
    assert isinstance(second, Waiting)
    assert second.reason == "needs 2 GPUs, 1 free"
    third = b.try_reserve(request("c", 1))
    assert not isinstance(third, Waiting)
    assert third.placements["worker-0"][1] == ("3",)
    first.release()
    again = b.try_reserve(request("b", 1, 1))
    assert not isinstance(again, Waiting)
    assert {g for _, gs in again.placements.values() for g in gs} == {"0", "1"}
    again.release()
    third.release()


def test_never_fits_is_refused_at_once(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    with pytest.raises(PlacementError, match="needs 5 GPUs, this host has 4"):
        c.check(request("x", 2, 3))
    with pytest.raises(PlacementError, match="needs 6 CPUs, this host has 4"):
        c.check(request("x", 0, 0, 0, cpus=2))
    with pytest.raises(PlacementError, match="of memory"):
        c.check(request("x", 0, memory=16 * 2**30))
    with pytest.raises(PlacementError, match="this host has none"):
        cluster(tmp_path, gpus=()).check(request("x", 1))
    c.check(request("x", 1, 1, 1, 1))  # fits exactly


def test_lease_of_a_crashed_holder_is_free_again(tmp_path: Path) -> None:
    lease_dir = tmp_path / "leases"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from cauce.cluster._leases import GpuLeases
                got, _ = GpuLeases({str(lease_dir)!r}).try_acquire(["0", "1"], 2, "crasher")
                print("held" if got else "none", flush=True)
                time.sleep(300)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        leases = GpuLeases(str(lease_dir))
        got, free = leases.try_acquire(["0", "1"], 1, "me")
        assert got is None and free == 0
        assert leases.holder("0") == "crasher"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        got, free = leases.try_acquire(["0", "1"], 2, "me")
        assert got is not None and free == 2
        for lease in got:
            lease.release()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


def test_drivers_asking_at_once_for_gpus_that_fit_never_wait(tmp_path: Path) -> None:
    """Two drivers (threads) asking at the same moment for 2 of 4 GPUs both get them: one does
    not lock a GPU it does not need, so the other never finds it taken for nothing. (Counting
    every free GPU made about one in seven of them wait: `cauce tune` printed "trial 3
    waiting: needs 2 GPUs, 1 free" under load.)"""
    gpus = ["0", "1", "2", "3"]
    for _ in range(200):
        barrier = threading.Barrier(2)
        got: list[tuple[list[Lease] | None, int]] = []

        def ask(name: str, barrier: threading.Barrier = barrier, got: list[Any] = got) -> None:
            leases = GpuLeases(str(tmp_path / "leases"))
            barrier.wait(timeout=10)
            got.append(leases.try_acquire(gpus, 2, name))

        threads = [threading.Thread(target=ask, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert [leases is not None for leases, _ in got] == [True, True], got
        held = [lease.gpu for leases, _ in got for lease in leases or []]
        assert sorted(held) == gpus  # all four, none twice
        for leases, _ in got:
            for lease in leases or []:
                lease.release()


def test_declared_gpus_from_env(tmp_path: Path) -> None:
    c = LocalCluster(env={"CAUCE_GPUS": "0,1,2,3"}, lease_dir=str(tmp_path))
    assert c.gpus == ("0", "1", "2", "3") and c.gpu_source == "CAUCE_GPUS"
    assert LocalCluster(env={"CAUCE_GPUS": ""}, lease_dir=str(tmp_path)).gpus == ()
    uuids = "GPU-5e4b1c2a-0f1d-4c3e-9a7b-1234567890ab,MIG-GPU-5e4b1c2a/1/0"
    assert len(LocalCluster(env={"CAUCE_GPUS": uuids}, lease_dir=str(tmp_path)).gpus) == 2
    for bad in ("-1", "abc", "0,0", "0,,1"):  # -1 would hide every GPU from the tasks
        with pytest.raises(SpecError, match=r"^CAUCE_GPUS must be a comma-separated list"):
            LocalCluster(env={"CAUCE_GPUS": bad}, lease_dir=str(tmp_path))


def test_declared_gpus_from_config_file(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    from helpers import cauce, write_job

    home = Path(cauce_env["CAUCE_HOME"])
    home.mkdir(parents=True)
    (home / "config.yaml").write_text("local:\n  gpus: [0, 1]\n")
    path = write_job(
        tmp_path,
        """
        name: cfg
        command: 'true'
        roles:
          worker: {instances: 2, resources: {gpus: 1}}
        """,
    )
    done = cauce(["run", "--dry-run", str(path)], cauce_env)
    assert done.returncode == 0, done.stderr
    assert "CUDA_VISIBLE_DEVICES=0" in done.stdout and "CUDA_VISIBLE_DEVICES=1" in done.stdout
    # CAUCE_GPUS wins over the file
    done = cauce(["run", "--dry-run", str(path)], {**cauce_env, "CAUCE_GPUS": "7"})
    assert done.returncode == 2 and "this host has 1 (CAUCE_GPUS)" in done.stderr
    (home / "config.yaml").write_text("local:\n  gpu: [0, 1]\n")
    done = cauce(["run", "--dry-run", str(path)], cauce_env)
    assert done.returncode == 2 and "local.gpu is not a known field" in done.stderr
    (home / "config.yaml").write_text("local:\n  memory: 0\n")  # not "the machine's memory"
    done = cauce(["run", "--dry-run", str(path)], cauce_env)
    assert done.returncode == 2, done.stderr
    assert (
        "local.memory must be at least 1 byte, got 0; leave it out to use the machine's memory"
        in done.stderr
    )


def _wait_for(folder: Path, count: int, driver: subprocess.Popen[str]) -> list[dict[str, object]]:
    """The records of ``count`` tasks of gpu_holder.py in ``folder`` (the driver must live)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            out, err = driver.communicate()
            raise AssertionError(f"cauce exited {driver.returncode} early:\n{out}\n{err}")
        found = sorted(folder.glob("*.start"))
        if len(found) >= count:
            return [json.loads(f.read_text()) for f in found]
        time.sleep(0.05)
    raise AssertionError(f"expected {count} tasks to start in {folder}")


def test_gpu_leases_outlive_a_killed_driver_until_its_tasks_are_gone(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """Driver A is killed with SIGKILL while its tasks ignore SIGTERM for their grace period:
    job B, waiting for the same declared GPUs, starts only after A's last process is gone."""
    from helpers import cauce_popen, py, running, write_job

    env = {**cauce_env, "CAUCE_GPUS": "0,1"}
    roles = "roles:\n  worker: {instances: 2, resources: {gpus: 1, cpus: 0.5}}\n"
    a_out, b_out = tmp_path / "a", tmp_path / "b"
    job_a = write_job(
        tmp_path,
        f"name: a\ncommand: {py('gpu_holder.py', a_out, '--stubborn')}\ngrace_period: 3\n" + roles,
        "a.yaml",
    )
    job_b = write_job(
        tmp_path, f"name: b\ncommand: {py('gpu_holder.py', b_out)}\n" + roles, "b.yaml"
    )
    a = cauce_popen(["run", str(job_a)], env)
    b: subprocess.Popen[str] | None = None
    a_pids: list[int] = []
    try:
        a_pids = [int(p) for r in _wait_for(a_out, 2, a) for p in (r["pid"], r["child"])]  # type: ignore[call-overload]
        b = cauce_popen(["run", str(job_b)], env)
        assert b.stderr is not None
        for line in b.stderr:  # B waits for the GPUs that A holds
            if "waiting: needs 2 GPUs, 0 free" in line:
                break
        else:
            raise AssertionError(f"job b did not wait: {b.communicate()}")
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        # the last moment a process of A was seen alive
        last_alive = time.time()
        deadline = time.monotonic() + 60
        while any(running(pid) for pid in a_pids) and time.monotonic() < deadline:
            last_alive = time.time()
            time.sleep(0.02)
        assert not any(running(pid) for pid in a_pids), "A's tasks outlived their grace period"
        out, err = b.communicate(timeout=120)
        assert b.returncode == 0, out + err
        b_tasks = [json.loads(f.read_text()) for f in sorted(b_out.glob("*.start"))]
        assert sorted(str(r["gpus"]) for r in b_tasks) == ["0", "1"]
        first_b = min(float(r["started"]) for r in b_tasks)  # type: ignore[arg-type]
        assert first_b > last_alive, (
            f"job b started {last_alive - first_b:.2f} s before the tasks of the killed job a "
            "were gone: its GPU leases were dropped with its driver"
        )
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.kill()
                proc.communicate()
        for pid in a_pids:
            if running(pid):
                psutil.Process(pid).kill()
