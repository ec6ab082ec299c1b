"""A tiny barrier stage that asks the executors where a gang's tasks would land, and what
they can reach: for ``cauce run --dry-run`` (hosts, ports, GPUs) and ``cauce doctor`` (can an
executor connect back to the driver, write to shared storage).

Each task reports its executor's address (as Spark's ``BarrierTaskInfo`` gives it, the same
address the real run uses), a free port there, its GPUs and the host's name; then, if asked, it
opens a TCP connection to a listener on the driver's advertised address, and writes and reads
back a small object under a storage URI. The results come back through the JVM (``collect`` of
Java strings), never through the driver's links: the probe works even when those would not.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cauce.cluster._ports import free_ports
from cauce.cluster.spark._executors import first_line
from cauce.cluster.spark._session import SharedSpark
from cauce.cluster.spark._wire import Acceptor
from cauce.errors import ClusterError

__all__ = ["Landing", "Listener", "probe", "storage_path", "written_by"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Landing:
    """What one probe task found on its executor."""

    host: str  # the executor's address, as the real run's tasks see it
    port: int  # a free port there now
    gpus: tuple[str, ...]
    name: str  # the host's own name (socket.gethostname())
    resolves_to: str  # what that name resolves to there
    connect: str | None = None  # None: not asked; "": connected; else why not
    storage: str | None = None  # None: not asked; "": written and read back; else why not


@dataclass
class Listener:
    """A TCP listener on the driver that probe tasks connect back to."""

    bind: str
    advertised: str
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    heard: list[str] = field(default_factory=list)  # hosts that connected with the token

    def __post_init__(self) -> None:
        self._acceptor = Acceptor(self.bind, self._answer, name="cauce-probe")
        self.port: int = self._acceptor.port

    def _answer(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(_CONNECT_TIMEOUT)
            with contextlib.suppress(OSError):
                token, _, host = sock.recv(512).decode("utf-8", "replace").strip().partition(" ")
                if token == self.token:
                    self.heard.append(host)
                    sock.sendall(b"ok\n")

    def close(self) -> None:
        self._acceptor.close()


def probe(
    shared: SharedSpark,
    count: int,
    cpus: int,
    gpus: int,
    *,
    timeout: float,
    listener: Listener | None = None,
    storage: str | None = None,
    token: str = "",
) -> list[Landing]:
    """Run ``count`` barrier tasks of ``cpus`` cores and ``gpus`` GPUs each; what each found.
    With ``storage``, task ``i`` writes :func:`storage_path` ``(storage, token, i)``.
    Raises :class:`ClusterError` when Spark has not run them within ``timeout`` seconds."""
    spec = json.dumps(
        {
            "connect": [listener.advertised, listener.port, listener.token] if listener else None,
            "storage": storage,
            "token": token or secrets.token_hex(4),
        }
    )
    group = f"cauce-probe-{secrets.token_hex(4)}"
    outcome: dict[str, Any] = {}
    profile = shared.profile(cpus, gpus)

    def body() -> None:
        sc = shared.sc
        try:
            sc.setJobGroup(group, "cauce: where would a gang land", interruptOnCancel=True)
            rdd = sc.parallelize(range(count), count).barrier()
            rdd = rdd.mapPartitions(functools.partial(_task, spec))
            if profile is not None:
                rdd = rdd.withResources(profile)
            outcome["rows"] = [str(row) for row in rdd._to_java_object_rdd().collect()]
        except Exception as exc:  # py4j and PySpark errors alike
            outcome["error"] = first_line(exc)

    from pyspark.util import InheritableThread

    thread = InheritableThread(body, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        with contextlib.suppress(Exception):
            shared.sc.cancelJobGroup(group)
        thread.join(30.0)
        raise ClusterError(f"Spark did not run {count} probe tasks within {timeout:.0f} s")
    if "error" in outcome:
        raise ClusterError(f"the probe tasks failed: {outcome['error']}")
    landed = [json.loads(row) for row in outcome["rows"]]
    landed.sort(key=lambda row: int(row.pop("index")))
    return [Landing(**{**row, "gpus": tuple(row["gpus"])}) for row in landed]


def _task(spec_json: str, rows: Iterable[int]) -> Iterator[str]:
    """The body of a probe task, on an executor."""
    del rows
    from pyspark import BarrierTaskContext

    spec = json.loads(spec_json)
    ctx = BarrierTaskContext.get()
    index = ctx.partitionId()
    host = ctx.getTaskInfos()[index].address.rsplit(":", 1)[0]
    resources = ctx.resources()
    name = socket.gethostname()
    try:
        resolves_to = socket.gethostbyname(name)
    except OSError as exc:
        resolves_to = f"? ({exc})"
    found: dict[str, Any] = {
        "index": index,
        "host": host,
        "port": free_ports(1, host)[0],
        "gpus": list(resources["gpu"].addresses) if "gpu" in resources else [],
        "name": name,
        "resolves_to": resolves_to,
    }
    if spec["connect"]:
        address, port, token = spec["connect"]
        found["connect"] = _connect_back(address, int(port), token, host)
    if spec["storage"]:
        found["storage"] = _write_read(storage_path(spec["storage"], spec["token"], index), host)
    yield json.dumps(found)


def _connect_back(address: str, port: int, token: str, host: str) -> str:
    try:
        with socket.create_connection((address, int(port)), timeout=_CONNECT_TIMEOUT) as sock:
            sock.sendall(f"{token} {host}\n".encode())
            if sock.recv(16).strip() != b"ok":
                return f"{address}:{port} answered, but not as the cauce driver"
    except OSError as exc:
        return f"cannot connect from {host} to the driver at {address}:{port}: {exc}"
    return ""


def storage_path(uri: str, token: str, index: int) -> str:
    """Where probe task ``index`` writes its object under ``uri`` (the caller removes it)."""
    return f"{uri.rstrip('/')}/.cauce-probe-{token}-{index}"


def written_by(host: str) -> bytes:
    return f"written by a cauce probe task on {host}\n".encode()


def _write_read(path: str, host: str) -> str:
    """Write a small object at ``path`` and read it back: "" or what failed. It stays, for the
    driver to read (is the storage shared?) and remove."""
    import fsspec

    body = written_by(host)
    try:
        fs, inner = fsspec.core.url_to_fs(path)
        with fs.open(inner, "wb") as file:
            file.write(body)
        with fs.open(inner, "rb") as file:
            back = file.read()
    except Exception as exc:  # every filesystem raises its own errors
        return f"{type(exc).__name__}: {exc}"[:300]
    return "" if back == body else f"read back {len(back)} bytes, wrote {len(body)}"


#: Under a dry run's plan on Spark.
SPARK_NOTE = (
    "(hosts, ports and GPUs: where a probe stage of this shape landed just now; Spark places\n"
    " the real run itself and may choose other executors, and ports are fresh for each attempt.\n"
    " Each task's environment is its executor's own, plus cauce's CAUCE_* variables, the job's\n"
    " env: and the contract above, computed again on the executor)"
)


def preview(
    shared: SharedSpark, task_ids: list[str], cpus: int, gpus: int, timeout: float = 120.0
) -> tuple[dict[str, tuple[str, tuple[str, ...]]], dict[str, int], str]:
    """For a dry run: placements and ports from a probe stage, and the note to print; on
    failure no placements and a note that says why."""
    try:
        landed = probe(shared, len(task_ids), cpus, gpus, timeout=timeout)
    except ClusterError as exc:
        note = (
            f"(Spark decides the hosts, ports and GPUs as the gang starts; a probe failed: {exc})"
        )
        return {}, dict.fromkeys(task_ids, 0), note
    pairs = list(zip(task_ids, landed, strict=True))
    placements = {task: (where.host, where.gpus) for task, where in pairs}
    return placements, {task: where.port for task, where in pairs}, SPARK_NOTE
