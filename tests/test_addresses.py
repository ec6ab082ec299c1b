"""Addresses that cross hosts, without a cluster: how the driver's address is chosen, where
Horovod's key-value store is advertised, the network variables of a task in a gang across
hosts, and the options of ``cauce doctor`` and ``cauce prepare``. (Across real hosts:
``test_multihost_addresses.py`` and the gang contract's multihost target.)"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from cauce.cluster import DriverAddress
from cauce.cluster.spark import _address
from cauce.cluster.spark._doctor import Check
from cauce.cluster.spark._netif import interface_of, network_env
from cauce.frameworks import GangLayout, TaskSlot
from helpers import cauce as cauce_cli
from helpers import py, write_job

#: Not an address of this machine: in a multi-host test subnet (10.213.2.0/24), which only
#: namespaces that the tests make use, and there an address nobody has; nothing is sent to it.
ELSEWHERE = "10.213.2.99"


def test_driver_address_comes_from_cauce_then_spark_then_the_route() -> None:
    conf = {"spark.driver.host": "127.0.0.1"}
    env = {"CAUCE_DRIVER_HOST": "127.0.0.1"}
    found = _address.resolve("spark://127.0.0.1:7077", {**conf, _address.KEY: "localhost"}, env)
    assert found == (DriverAddress("localhost", "localhost"), "from spark.cauce.driverHost")
    found = _address.resolve("spark://127.0.0.1:7077", conf, {_address.ENV: ELSEWHERE})
    # Not an address of this host (behind NAT, say): advertised, and listened for everywhere.
    assert found == (DriverAddress("0.0.0.0", ELSEWHERE), "from CAUCE_DRIVER_HOST")
    found = _address.resolve("spark://127.0.0.1:7077", conf, {})
    assert found == (DriverAddress("127.0.0.1", "127.0.0.1"), "from spark.driver.host")
    bound = {"spark.driver.bindAddress": "0.0.0.0"}
    found = _address.resolve("spark://127.0.0.1:7077", bound, {})
    assert found == (
        DriverAddress("0.0.0.0", "127.0.0.1"),
        "the interface that routes to 127.0.0.1",
    )
    assert _address.resolve("local[2]", {}, {}) == (
        DriverAddress("127.0.0.1", "127.0.0.1"),
        "Spark runs in this process",
    )
    assert _address.resolve("yarn", {}, {}) is None  # no yarn-site.xml: Spark's choice


def test_master_hosts_of_every_kind(tmp_path: Path) -> None:
    assert _address.master_host("spark://m1:7077,m2:7077", {}) == "m1"
    assert _address.master_host("k8s://https://api.example.com:6443", {}) == "api.example.com"
    assert _address.master_host("k8s://api.example.com:6443", {}) == "api.example.com"
    site = tmp_path / "yarn-site.xml"
    site.write_text(
        "<configuration><property><name>yarn.resourcemanager.address</name>"
        "<value>rm.example.com:8032</value></property></configuration>"
    )
    assert _address.master_host("yarn", {"HADOOP_CONF_DIR": str(tmp_path)}) == "rm.example.com"
    assert _address.master_host("local[2]", {}) is None


def test_loopback_and_local_addresses() -> None:
    assert _address.is_loopback("127.0.0.1") and _address.is_loopback("localhost")
    assert not _address.is_loopback(ELSEWHERE)
    assert _address.is_local("127.0.0.1") and not _address.is_local(ELSEWHERE)
    assert _address.route_to("127.0.0.1") == "127.0.0.1"
    assert interface_of("127.0.0.1") == "lo"
    assert interface_of(ELSEWHERE) is None


def _layout(*hosts: str) -> GangLayout:
    slots = tuple(
        TaskSlot(f"worker-{i}", "worker", i, host, 20000 + i) for i, host in enumerate(hosts)
    )
    return GangLayout("j", "j", "pytorch", 0, 0, slots)


def test_gloo_interface_only_for_gangs_across_hosts() -> None:
    # One host: nothing to say. Several, with this task on loopback: no interface to name.
    assert network_env(_layout("127.0.0.1", "127.0.0.1"), "worker-0", {}) == ({}, [])
    added, _ = network_env(_layout("127.0.0.1", ELSEWHERE), "worker-0", {})
    assert added == {}
    # On a real address the task gets its interface (test_multihost_addresses.py runs it).


def test_horovod_dry_run_names_the_store_on_the_drivers_address(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """It crashed (``GangLayout.rendezvous must be 'host:port'``) before starting anything."""
    path = write_job(
        tmp_path,
        f"""
        name: hvd-plan
        framework: horovod
        command: {py("exit_with.py", 0)}
        roles:
          worker: {{instances: 2, resources: {{cpus: 0.25}}}}
        """,
    )
    done = cauce_cli(["run", "--dry-run", str(path)], cauce_env)
    assert done.returncode == 0, done.stderr
    assert "HOROVOD_GLOO_RENDEZVOUS_ADDR=127.0.0.1\n" in done.stdout
    ports = re.findall(r"HOROVOD_GLOO_RENDEZVOUS_PORT=(\d+)\n", done.stdout)
    assert len(ports) == 2 and len(set(ports)) == 1 and int(ports[0]) > 0
    assert "inherited from this shell" in done.stdout


def test_horovod_store_listens_where_the_cluster_says() -> None:
    from cauce.gang._horovod import HorovodRendezvous

    store = HorovodRendezvous(lambda: DriverAddress("0.0.0.0", "127.0.0.1"))
    try:
        host, _, port = store.for_attempt().rpartition(":")
        assert host == "127.0.0.1"
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    finally:
        store.stop()


def test_doctor_lines_and_options(cauce_env: dict[str, str]) -> None:
    assert Check("master x", True, "answers").line() == "master x: ok (answers)"
    assert Check("connect back", False, "why (fix)").line() == "connect back: FAIL: why (fix)"
    done = cauce_cli(["doctor", "--cluster", "local"], cauce_env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --cluster must be a Spark master"), done.stderr
    done = cauce_cli(["doctor", "--cluster", "spark://127.0.0.1:1", "--wait", "5"], cauce_env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("master spark://127.0.0.1:1: FAIL: cannot connect to "), done
    assert "error: 1 check(s) failed" in done.stderr


def test_prepare_takes_cluster_and_its_old_name(capsys: pytest.CaptureFixture[str]) -> None:
    from cauce.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["prepare", "m:f", "--out", "o", "--cluster", "local[2]"])
    assert args.spark_master == "local[2]"
    assert capsys.readouterr().err == ""
    args = parser.parse_args(["prepare", "m:f", "--out", "o", "--spark-master", "local[3]"])
    assert args.spark_master == "local[3]"
    assert "--spark-master is deprecated: use --cluster" in capsys.readouterr().err
