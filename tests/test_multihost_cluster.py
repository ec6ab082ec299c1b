"""The multi-host cluster of ``multihost_fixtures`` (Linux network namespaces, one address per
host): it comes up, its hosts reach each other and the S3 store by address and by name, a host
can be cut off and restored, a worker killed and started, and it leaves nothing behind. Then
cauce itself from the driver host, with the tasks of one gang on two other hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import multihost_net as net
from helpers import py, write_job
from multihost import S3_PORT, WORKER_UI, MultiHost
from multihost_fixtures import start

pytestmark = pytest.mark.slow


def python_on(cluster: MultiHost, host: str, code: str) -> str:
    """Run ``code`` with this interpreter on ``host``; its stdout (fails the test if it fails)."""
    done = cluster.run_on(host, [sys.executable, "-c", code])
    assert done.returncode == 0, f"on {host}: {done.stdout}{done.stderr}"
    return done.stdout


def test_teardown_leaves_nothing_and_leftovers_are_removed() -> None:
    pytest.importorskip("pyspark")
    pytest.importorskip("moto")
    try:
        net.check_available()
    except net.Unavailable as exc:
        pytest.skip(f"no multi-host cluster on this machine: {exc}")
    names = net.Names("t", 1)
    stale = names.ns("w7")
    try:
        stale_pid = _crashed_run(names, stale)
        cluster = start(1, tag="t", index=1)  # removes what the crashed run left, first
    except BaseException:
        net.cleanup(names)
        raise
    try:
        assert not _alive(stale_pid)
        assert stale not in net.namespaces() and not (net.ETC_NETNS / stale).exists()
        assert names.link("w7") not in net.links()
        assert sorted(cluster.hosts) == ["cauce-td", "cauce-tm", "cauce-ts3", "cauce-tw1"]
        assert cluster.master == "spark://10.213.1.2:7077"
        started = [pid for host in cluster.hosts for pid in cluster.pids_in(host)]
        assert len(started) == 3  # the master, the worker and moto's server
        assert (cluster.folder / "hosts").is_dir()
    finally:
        swept = cluster.down()
    assert swept == [], "down() stopped its processes by pid; none was left for the sweep"
    assert net.leftovers(names) == []
    assert [pid for pid in started if _alive(pid)] == []
    assert not cluster.folder.exists()


def _crashed_run(names: net.Names, stale: str) -> int:
    """Leave what a crashed run of this tag would: a namespace with a process in it, a link
    and an /etc/netns folder. Returns the process's pid."""
    net.cleanup(names)
    net.ip("netns", "add", stale)
    net.ip("link", "add", names.link("w7"), "type", "veth", "peer", "name", "eth0",
           "netns", stale)  # fmt: skip
    (net.ETC_NETNS / stale).mkdir(parents=True, exist_ok=True)
    shell = "setsid sleep 600 >/dev/null 2>&1 </dev/null & echo $!"
    sleeper = subprocess.run(
        ["ip", "netns", "exec", stale, "sh", "-c", shell],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    pid = int(sleeper.stdout)
    assert net.pids_in(stale) == [pid]
    return pid


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_registered_with_their_addresses(multihost_cluster: MultiHost) -> None:
    cluster = multihost_cluster
    at = cluster.names.address  # 10.213.0.X by default; a tag and subnet of its own under xdist
    assert cluster.master == f"spark://{at('m')}:7077"
    assert cluster.hosts[cluster.ns("w1")] == at("w1") and cluster.hosts[cluster.ns("d")] == at("d")
    url = f"{cluster.master_ui}/json/"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}).read().decode())"
    state = json.loads(python_on(cluster, "d", code))
    alive = {w["host"]: w for w in state["workers"] if w["state"] == "ALIVE"}
    assert sorted(alive) == [at("w1"), at("w2")]
    for worker in alive.values():
        assert worker["cores"] == 1 and worker["memory"] == 1024
        assert worker["resources"]["gpu"]["addresses"] == ["0", "1"]
    # Each host resolves its own name and the machine's host name to its own address, and the
    # others by their names.
    names = ", ".join(f"n({cluster.ns(role)!r})" for role in ("w1", "w2", "m"))
    code = f"import socket; n = socket.gethostbyname; print(n(socket.gethostname()), {names})"
    for host in ("d", "w1", "w2"):
        mine, *others = python_on(cluster, host, code).split()
        assert mine == cluster.hosts[cluster.ns(host)]
        assert others == [at("w1"), at("w2"), at("m")]
    assert cluster.pids_in("d") == [] and len(cluster.pids_in("w1")) == 1
    sleeper = cluster.popen_on("d", ["sleep", "60"])  # ip netns exec execs: the pid is sleep's
    try:
        deadline = time.monotonic() + 30  # `ip netns exec` has to exec it first (busy host)
        while cluster.pids_in("d") != [sleeper.pid] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cluster.pids_in("d") == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.communicate(timeout=30)
    assert cluster.pids_in("d") == []


def test_every_host_reaches_the_s3_store(multihost_cluster: MultiHost) -> None:
    cluster = multihost_cluster
    pytest.importorskip("boto3")
    client = f"import boto3; s3 = boto3.client('s3', endpoint_url='{cluster.s3}'); "
    python_on(
        cluster,
        "d",
        client + "s3.create_bucket(Bucket='shared'); "
        "s3.put_object(Bucket='shared', Key='from/driver', Body=b'written on cauce-d')",
    )
    for host in ("w1", "w2"):
        code = client + "print(s3.get_object(Bucket='shared', Key='from/driver')['Body'].read())"
        assert python_on(cluster, host, code).strip() == "b'written on cauce-d'"
    assert cluster.reachable("w2", "s3", S3_PORT)


def test_cut_host_is_unreachable_until_restored(multihost_cluster: MultiHost) -> None:
    cluster = multihost_cluster
    assert cluster.reachable("d", "w1", WORKER_UI)
    cluster.cut("w1")
    try:
        assert not cluster.reachable("d", "w1", WORKER_UI, timeout=2.0)
        assert not cluster.reachable("m", "w1", WORKER_UI, timeout=2.0)
        assert cluster.reachable("d", "w2", WORKER_UI)  # only w1 is cut off
        assert len(cluster.pids_in("w1")) == 1  # its worker still runs, unreachable
    finally:
        cluster.restore("w1")
    deadline = time.monotonic() + 20
    while not cluster.reachable("d", "w1", WORKER_UI):
        assert time.monotonic() < deadline, "w1 unreachable after restore"
        time.sleep(0.2)


def test_killed_worker_is_lost_and_starts_again(multihost_cluster: MultiHost) -> None:
    cluster = multihost_cluster
    [before] = cluster.pids_in("w2")
    cluster.kill_worker("w2")
    deadline = time.monotonic() + 60
    while cluster.ns("w2") in cluster._alive_workers(cluster.state()) or _alive(before):
        assert time.monotonic() < deadline, "the master still lists the killed worker"
        time.sleep(0.3)
    cluster.start_worker("w2")
    [after] = cluster.pids_in("w2")
    assert after != before
    assert sorted(cluster._alive_workers(cluster.state())) == [cluster.ns("w1"), cluster.ns("w2")]


#: A known failure under load, not of addresses (issue 12: the driver's REST read of its own
#: executors times out after 10 s and is fatal): such a run is tried once more.
FLAKE = "cannot read the executors of Spark at"


def run_cauce(cluster: MultiHost, folder: Path, job: str) -> str:
    """``cauce run`` on the driver host against the cluster: "exit N", stdout and stderr."""
    path = write_job(folder, job)
    argv = [sys.executable, "-m", "cauce", "run", str(path), "--cluster", cluster.master]
    argv += ["--conf", "spark.executor.memory=512m"]
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for _ in range(2):
        done = cluster.run_on("d", argv, env=env, cwd=folder, timeout=240)
        out = f"exit {done.returncode}\n{done.stdout}{done.stderr}"
        if FLAKE not in done.stderr:
            break
        print(f"retried after: {done.stderr.strip().splitlines()[-1]}")
    return out


def test_cauce_runs_a_gang_across_two_hosts(multihost_cluster: MultiHost, tmp_path: Path) -> None:
    job = f"""
        name: across
        framework: none
        command: {py("host_probe.py")}
        roles:
          worker: {{instances: 2}}
        """
    out = run_cauce(multihost_cluster, tmp_path, job)
    assert out.startswith("exit 0\n"), out
    hosts = {line.split()[3] for line in out.splitlines() if ": host " in line}
    at = multihost_cluster.names.address
    assert hosts == {at("w1"), at("w2")}, out  # one task on each worker host
    masters = {line.split()[5] for line in out.splitlines() if ": host " in line}
    assert len(masters) == 1 and masters.pop().split(":")[0] in hosts, out


def test_horovod_rendezvous_reached_from_another_host(
    multihost_cluster: MultiHost, tmp_path: Path
) -> None:
    job = f"""
        name: rendezvous
        framework: horovod
        command: {py("host_probe.py", "--rendezvous")}
        roles:
          worker: {{instances: 2}}
        """
    out = run_cauce(multihost_cluster, tmp_path, job)
    assert "rendezvous 127.0.0.1:" not in out, out
    assert out.startswith("exit 0\n"), out
    assert out.count(f": rendezvous {multihost_cluster.names.address('d')}:") == 2, out
