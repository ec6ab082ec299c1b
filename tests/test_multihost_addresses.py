"""Addresses across hosts, on the multi-host cluster: ``cauce run --dry-run`` shows each task's
real host, ``cauce doctor`` passes (and fails, with the reason, for a driver address nobody
has), and a gang across hosts whose host names resolve to loopback still meets (cauce sets
``GLOO_SOCKET_IFNAME``) and says why it had to."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

import multihost_net as net
from helpers import ROOT, py, write_job
from multihost import MultiHost

pytestmark = pytest.mark.slow

CONF = ["--conf", "spark.executor.memory=512m"]


def cauce_on_d(
    cluster: MultiHost,
    folder: Path,
    args: list[str],
    env: Mapping[str, str] | None = None,
) -> tuple[int, str, str]:
    """``cauce ARGS`` on the driver host: exit code, stdout, stderr."""
    argv = [sys.executable, "-m", "cauce", *args]
    extra = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), **(env or {})}
    done = cluster.run_on("d", argv, env=extra, cwd=folder, timeout=400)
    return done.returncode, done.stdout, done.stderr


def workers(cluster: MultiHost) -> set[str]:
    return {cluster.hosts[host] for host in cluster.worker_hosts}


def test_dry_run_shows_each_tasks_real_host(multihost_cluster: MultiHost, tmp_path: Path) -> None:
    cluster = multihost_cluster
    path = write_job(
        tmp_path,
        f"""
        name: plan
        framework: horovod
        command: {py("exit_with.py", 0)}
        roles:
          worker: {{instances: 2}}
        """,
    )
    code, out, err = cauce_on_d(cluster, tmp_path, ["run", "--dry-run", str(path), "--cluster",
                                                    cluster.master, *CONF])  # fmt: skip
    assert code == 0, out + err
    shown = re.findall(r"worker-\d: host (\S+) port (\d+) ", out)
    assert {host for host, _ in shown} == workers(cluster), out  # two tasks, two hosts
    assert all(int(port) > 0 for _, port in shown)
    rank0 = shown[0][0]
    assert out.count(f"MASTER_ADDR={rank0}\n") == 2 and "<executor>" not in out
    assert out.count("LOCAL_WORLD_SIZE=1\n") == 2 and out.count("GROUP_WORLD_SIZE=2\n") == 2
    driver = cluster.hosts[cluster.driver]
    assert out.count(f"HOROVOD_GLOO_RENDEZVOUS_ADDR={driver}\n") == 2, out
    assert "Spark places\n the real run itself" in out
    assert f"cauce: driver address {driver} (the interface that routes to" in err, err


def test_doctor_passes_on_the_cluster(multihost_cluster: MultiHost, tmp_path: Path) -> None:
    cluster = multihost_cluster
    pytest.importorskip("s3fs")
    bucket = "doctor"
    _make_bucket(cluster, bucket)
    args = ["doctor", "--cluster", cluster.master, "--storage", f"s3://{bucket}/check", *CONF]
    args += ["--conf", "spark.executor.resource.gpu.amount=2"]
    code, out, err = cauce_on_d(cluster, tmp_path, args)
    assert code == 0, out + err
    lines = out.splitlines()
    names = [re.sub(r": (ok|FAIL)\b.*", "", line) for line in lines]
    assert names == [
        f"master {cluster.master}",
        "driver address",
        "spark application",
        "executors",
        "GPU resources",
        "connect back",
        "host names",
        "shared storage",
    ], out
    assert all(": ok (" in line for line in lines), out
    hosts = sorted(workers(cluster))
    assert f"2 registered: {hosts[0]} (1 cores, 2 GPUs), {hosts[1]} (1 cores, 2 GPUs)" in out
    assert (
        f"tasks on {hosts[0]}, {hosts[1]} reached the driver at {cluster.hosts[cluster.driver]}:"
        in out
    )
    assert f"written on {hosts[0]}, {hosts[1]} and read back here: s3://{bucket}/check" in out


def test_doctor_fails_to_connect_back_to_an_address_nobody_has(
    multihost_cluster: MultiHost, tmp_path: Path
) -> None:
    """Spark's own driver address is right, cauce's is one that no host has: the executors
    run, and the connect-back check names the address, the host it failed from and the fix."""
    cluster = multihost_cluster
    driver = cluster.hosts[cluster.driver]
    nobody = driver.rsplit(".", 1)[0] + ".99"  # in the cluster's own subnet, on no host
    args = ["doctor", "--cluster", cluster.master, "--wait", "40", *CONF]
    args += ["--conf", f"spark.driver.host={driver}"]
    code, out, err = cauce_on_d(cluster, tmp_path, args, env={"CAUCE_DRIVER_HOST": nobody})
    assert code == 1, out + err
    assert (
        f"driver address: ok ({nobody}, from CAUCE_DRIVER_HOST; listening on 0.0.0.0; not an "
        in out
    )
    [line] = [line for line in out.splitlines() if line.startswith("connect back:")]
    assert re.match(
        rf"connect back: FAIL: cannot connect from 10\.\d+\.\d+\.1[12] to the driver at "
        rf"{re.escape(nobody)}:\d+: .*\(set CAUCE_DRIVER_HOST or spark\.cauce\.driverHost to an "
        r"address of this host that the executors reach",
        line,
    ), line
    assert "executors: ok (2 registered" in out
    assert "error: 1 check(s) failed" in err


@contextmanager
def loopback_names(cluster: MultiHost) -> Iterator[None]:
    """The worker hosts' /etc/hosts map this machine's host name to 127.0.1.1 (as many
    distributions' do), rewritten in place (running processes see it), restored after."""
    files = {net.ETC_NETNS / host / "hosts": "" for host in cluster.worker_hosts}
    for path in files:
        files[path] = path.read_text()
    name = socket.gethostname()
    try:
        for path, text in files.items():
            lines = [line for line in text.splitlines() if not line.endswith(f" {name}")]
            path.write_text("\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n")
        yield
    finally:
        for path, text in files.items():
            path.write_text(text)


def test_ddp_across_hosts_whose_names_resolve_to_loopback(
    multihost_cluster: MultiHost, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    cluster = multihost_cluster
    out = tmp_path / "out"
    train = ROOT / "examples" / "ddp" / "train.py"
    path = write_job(
        tmp_path,
        f"""
        name: ddp-loopback-names
        framework: pytorch
        command: {py(str(train), "--steps", 20, "--out", out)}
        roles:
          worker: {{instances: 2}}
        """,
    )
    with loopback_names(cluster):
        code, printed, err = cauce_on_d(
            cluster, tmp_path, ["run", str(path), "--cluster", cluster.master, *CONF]
        )
    assert code == 0, printed + err
    assert "parameters identical on all ranks: True" in printed, printed
    for task in ("worker-0", "worker-1"):
        assert f"[{task}] cauce: warning: this host's name" in printed, printed
        assert f"[{task}] cauce: GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME set to eth0" in printed


def _make_bucket(cluster: MultiHost, bucket: str) -> None:
    code = (
        "import boto3, os; s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n"
        f"try: s3.create_bucket(Bucket={bucket!r})\n"
        "except s3.exceptions.BucketAlreadyOwnedByYou: pass"
    )
    done = cluster.run_on("d", [sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
