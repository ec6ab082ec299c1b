"""``cauce doctor``: what the driver can check of a Spark cluster before a gang runs there.

Each check is one :class:`Check`, yielded as soon as it is known: the master answers, the
driver's address (see ``_address``), the Spark application starts, executors register (their
cores and GPUs), the GPUs the application asks for are there, an executor connects back to the
driver's advertised address (a tiny barrier stage, ``_probe``), the executors' host names do not
resolve to loopback, and, given a storage URI, every probe task writes an object there that the
driver reads back (shared storage). A failed step skips those that need it.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cauce.cluster.spark import _address
from cauce.cluster.spark._probe import Landing, Listener, probe, storage_path, written_by
from cauce.cluster.spark._session import SharedSpark
from cauce.errors import CauceError

__all__ = ["Check", "doctor"]

_DOCS = "see docs/spark.md, 'Running on a real cluster'"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found (ok) or the reason and the fix (failed)

    def line(self) -> str:
        """``name: ok (detail)`` or ``name: FAIL: reason (fix)``."""
        if self.ok:
            return f"{self.name}: ok ({self.detail})"
        return f"{self.name}: FAIL: {self.detail}"


def doctor(
    master: str,
    conf: Mapping[str, str] | None = None,
    *,
    storage: str | None = None,
    wait: float = 60.0,
) -> Iterator[Check]:
    """The checks, in order; the Spark application it starts is stopped at the end."""
    from cauce.cluster.spark._cluster import SparkCluster

    conf = dict(conf or {})
    reached = _master(master)
    yield reached
    if not reached.ok:
        return
    yield _driver(master, conf)
    cluster = SparkCluster(master, conf)
    try:
        try:
            shared = cluster.session()
        except CauceError as exc:
            yield Check("spark application", False, str(exc))
            return
        yield Check("spark application", True, f"{shared.sc.applicationId} on {master}")
        executors = _executors(shared, wait)
        yield executors
        if not executors.ok:
            return
        yield _gpus(shared)
        yield from _probe(shared, storage, wait)
    finally:
        cluster.close()


def _master(master: str) -> Check:
    name = f"master {master}"
    if master.startswith("local"):
        return Check(name, True, "Spark runs inside this process")
    host = _address.master_host(master, {})
    if master.startswith("spark://"):
        ports = [part.rpartition(":")[2] for part in master[len("spark://") :].split(",")]
        port = int(ports[0]) if ports[0].isdigit() else 7077
    elif master.startswith("k8s://"):
        from urllib.parse import urlsplit

        url = master[len("k8s://") :]
        port = urlsplit(url if "://" in url else f"https://{url}").port or 443
    else:
        return Check(name, True, "not checked: Spark finds YARN through HADOOP_CONF_DIR")
    if host is None:
        return Check(name, False, f"cannot tell the host of {master} (spark://HOST:PORT)")
    try:
        with socket.create_connection((host, port), timeout=5.0):
            pass
    except OSError as exc:
        return Check(
            name, False, f"cannot connect to {host}:{port}: {exc} (is it running? a firewall?)"
        )
    return Check(name, True, f"{host}:{port} answers")


def _driver(master: str, conf: Mapping[str, str]) -> Check:
    import os

    found = _address.resolve(master, conf, os.environ)
    if found is None:
        return Check("driver address", True, "Spark's choice (its spark.driver.host)")
    where, how = found
    detail = f"{where.advertised}, {how}"
    if where.bind != where.advertised:
        detail += f"; listening on {where.bind}"
    if not _address.is_local(where.advertised):
        detail += "; not an address of this host: right only behind NAT or a proxy"
    master_host = _address.master_host(master, os.environ)
    remote = master_host is not None and not _address.is_loopback(master_host)
    if remote and _address.is_loopback(where.advertised):
        return Check(
            "driver address",
            False,
            f"{where.advertised} is loopback, and the master is on another host: set "
            f"{_address.ENV} to an address of this host that the executors reach",
        )
    return Check("driver address", True, detail)


def _executors(shared: SharedSpark, wait: float) -> Check:
    """Wait up to ``wait`` s for a first executor, then a few seconds for the others."""
    deadline = time.monotonic() + wait
    found, settled = shared.executors(), 0.0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = shared.executors()
        if found and len(now) == len(found):
            settled += 0.5
            if settled >= 3.0:
                break
        else:
            found, settled = now, 0.0
    if not found:
        return Check(
            "executors",
            False,
            f"none registered within {wait:g} s (are workers alive with free cores and memory "
            f"for spark.executor.memory? can they reach the driver at {shared.driver.advertised}, "
            "spark.driver.host? see the master's UI)",
        )
    found = sorted(found, key=lambda ex: (ex.host, ex.id))
    listed = ", ".join(f"{ex.host} ({ex.cores} cores, {len(ex.gpus)} GPUs)" for ex in found)
    return Check("executors", True, f"{len(found)} registered: {listed}")


def _gpus(shared: SharedSpark) -> Check:
    asked = float(shared.setting("spark.executor.resource.gpu.amount", "0"))
    executors = shared.executors()
    if not asked:
        return Check(
            "GPU resources",
            True,
            "none asked for: set spark.executor.resource.gpu.amount for jobs with resources.gpus",
        )
    short = [ex.host for ex in executors if len(ex.gpus) < asked]
    if short:
        return Check(
            "GPU resources",
            False,
            f"executors on {', '.join(short)} have fewer than {asked:g} GPUs "
            "(spark.executor.resource.gpu.amount; check the workers' discovery script)",
        )
    total = sum(len(ex.gpus) for ex in executors)
    return Check("GPU resources", True, f"{total} GPUs on {len(executors)} executors")


def _probe(shared: SharedSpark, storage: str | None, wait: float) -> Iterator[Check]:
    _, free, executors = shared.free_slots(1, 0)
    count = min(free, len(executors))
    if count < 1:
        yield Check("connect back", False, "no free task slot to run a probe task in")
        return
    listener = Listener(shared.driver.bind, shared.driver.advertised)
    token = secrets.token_hex(4)
    try:
        landed = probe(
            shared, count, 1, 0, timeout=wait, listener=listener, storage=storage, token=token
        )
    except CauceError as exc:
        yield Check("connect back", False, str(exc))
        return
    finally:
        listener.close()
    yield _connected(landed, listener)
    yield _names(landed)
    if storage:
        yield _storage(landed, storage, token)


def _connected(landed: list[Landing], listener: Listener) -> Check:
    failed = [where.connect for where in landed if where.connect]
    target = f"{listener.advertised}:{listener.port}"
    if failed:
        return Check(
            "connect back",
            False,
            f"{failed[0]} (set {_address.ENV} or {_address.KEY} to an address of this host "
            f"that the executors reach; {_DOCS})",
        )
    hosts = ", ".join(sorted({where.host for where in landed}))
    return Check("connect back", True, f"tasks on {hosts} reached the driver at {target}")


def _names(landed: list[Landing]) -> Check:
    bad = [w for w in landed if _address.is_loopback(w.resolves_to)]
    if not bad:
        return Check("host names", True, "each executor's host name resolves to a real address")
    where = bad[0]
    return Check(
        "host names",
        True,
        f"warning: on {where.host}, the host name {where.name} resolves to {where.resolves_to}, "
        "a loopback address: cauce sets GLOO_SOCKET_IFNAME for gangs across hosts, other "
        "programs may advertise loopback; fix /etc/hosts or DNS",
    )


def _storage(landed: list[Landing], storage: str, token: str) -> Check:
    import fsspec

    failed = [(w.host, w.storage) for w in landed if w.storage]
    if failed:
        host, why = failed[0]
        return Check("shared storage", False, f"cannot write {storage} from {host}: {why}")
    fs, _ = fsspec.core.url_to_fs(storage)
    for index, where in enumerate(landed):
        path = fs._strip_protocol(storage_path(storage, token, index))
        try:
            fs.invalidate_cache()
            back = fs.cat_file(path)
            fs.rm(path)
        except (OSError, ValueError) as exc:
            return Check(
                "shared storage",
                False,
                f"written on {where.host}, but the driver cannot read it: {exc} (is {storage} "
                "a storage every host shares? a local path is not)",
            )
        if back != written_by(where.host):
            return Check("shared storage", False, f"read back other bytes than {where.host} wrote")
    hosts = ", ".join(sorted({where.host for where in landed}))
    return Check("shared storage", True, f"written on {hosts} and read back here: {storage}")
