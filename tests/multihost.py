"""A multi-host cluster on this machine: each host a Linux network namespace with its address.

``cauce-m`` runs the Spark standalone master, ``cauce-w1``..``cauce-wN`` one worker each (its
cores, memory and GPUs declared through a discovery script, as in ``spark_fixtures``),
``cauce-s3`` an S3-compatible store (moto's server) that every host reaches, and ``cauce-d`` is
the driver host, where ``cauce`` runs (:meth:`MultiHost.run_on`). The network is in
:mod:`multihost_net`; this module starts and stops the processes.

Every process is started detached (its own session, not a child of the caller, like Spark's
``spark-daemon.sh``) so that the tests' check for leaked children does not take it for a leak;
its pid is kept (and written to ``pids/``) and :meth:`MultiHost.down` ends it by pid and process
group, then kills whatever is left in our namespaces, then removes the network. A watchdog
child does the same if the caller dies without its teardown (a timeout's SIGTERM, kill -9).

Used by ``multihost_fixtures`` (pytest) and ``scripts/multihost_cluster.py`` (by hand).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import multihost_net as net
from multihost_net import Names, Unavailable

__all__ = ["MultiHost", "Names", "Unavailable"]

MASTER_PORT, MASTER_UI, WORKER_PORT, WORKER_UI, S3_PORT = 7077, 8080, 7078, 8081, 5000
GPUS_PER_WORKER = 2
_MASTER = "org.apache.spark.deploy.master.Master"
_WORKER = "org.apache.spark.deploy.worker.Worker"
_JVM_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
_CLEAN = ("SPARK_", "PYSPARK_", "AWS_", "CAUCE_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy")

#: Fed nothing: when its stdin closes (the owner's teardown ran, or the owner died), it removes
#: the cluster of its tag (processes, namespaces, links, bridge) and its folder, idempotently.
_WATCHDOG = """
import shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
sys.path.insert(0, sys.argv[1])
import multihost_net
sys.stdin.buffer.read()
multihost_net.cleanup(multihost_net.Names(sys.argv[2], int(sys.argv[3])))
shutil.rmtree(sys.argv[4], ignore_errors=True)
"""


class MultiHost:
    """A cluster of ``workers`` worker hosts, a master, a driver and an S3 host."""

    def __init__(
        self,
        workers: int = 2,
        *,
        tag: str = "",
        index: int = 0,
        folder: Path | None = None,
        cores: int = 1,
        memory: str = "1g",
        gpus: int = GPUS_PER_WORKER,
    ) -> None:
        self.names = Names(tag, index)
        self.workers, self.cores, self.memory, self.gpus = workers, cores, memory, gpus
        self.folder = folder or Path(tempfile.mkdtemp(prefix=f"cauce-multihost-{tag}"))
        self.roles = self.names.roles(workers)
        #: Namespace name -> address, for every host.
        self.hosts = {self.names.ns(r): self.names.address(r) for r in self.roles}
        self.master_address = self.names.address("m")
        self.master = f"spark://{self.master_address}:{MASTER_PORT}"
        self.master_ui = f"http://{self.master_address}:{MASTER_UI}"
        self.s3 = f"http://{self.names.address('s3')}:{S3_PORT}"
        self.driver = self.names.ns("d")
        self.worker_hosts = [self.names.ns(f"w{i}") for i in range(1, workers + 1)]
        self._watchdog: subprocess.Popen[bytes] | None = None

    # --- per host ----------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        """The namespace of ``host``, given as its name (``cauce-w1``) or role (``w1``)."""
        if host in self.hosts:
            return host
        if self.names.ns(host) in self.hosts:
            return self.names.ns(host)
        raise KeyError(f"no host {host!r}; hosts: {', '.join(self.hosts)}")

    def dir(self, host: str) -> Path:
        return self.folder / "hosts" / self.ns(host)

    def env(self, host: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a process on ``host``: its own HOME and TMPDIR (hosts share no
        local files), S3 credentials and endpoint, this interpreter for PySpark."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN)}
        home = self.dir(host)
        base.update(
            HOME=str(home / "home"),
            TMPDIR=str(home / "tmp"),
            CAUCE_HOME=str(home / "cauce"),
            PYSPARK_PYTHON=sys.executable,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=self.s3,
            PYTHONUNBUFFERED="1",
        )
        return {**base, **(extra or {})}

    def run_on(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to its end inside ``host``'s namespace; ``env`` adds to :meth:`env`."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *argv],
            env=self.env(host, env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen_on(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` inside ``host``'s namespace (a child of the caller, who waits for it;
        ``ip netns exec`` execs the command, so the pid is the command's)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *argv],
            env=self.env(host, env),
            text=True,
            **kwargs,
        )

    def pids_in(self, host: str) -> list[int]:
        """The processes whose network namespace is ``host``'s."""
        return net.pids_in(self.ns(host))

    def processes_with(self, text: str) -> dict[str, list[str]]:
        """Per host, ``pid cmdline`` of its processes whose command line contains ``text``
        (the hosts where none does are left out)."""
        found: dict[str, list[str]] = {}
        for ns in self.hosts:
            for pid in net.pids_in(ns):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as file:
                        line = file.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue  # ended meanwhile
                if text in line:
                    found.setdefault(ns, []).append(f"{pid} {line.strip()}")
        return found

    def reachable(self, source: str, target: str, port: int, timeout: float = 2.0) -> bool:
        """True if a TCP connection from ``source`` to ``target``'s address opens in time."""
        return net.reachable(self.ns(source), self.hosts[self.ns(target)], port, timeout)

    # --- faults ------------------------------------------------------------------------------

    def role(self, host: str) -> str:
        """The role of ``host`` (``m``, ``s3``, ``d``, ``w1``..)."""
        return self.ns(host)[len(self.names.ns("")) :]

    def _link(self, host: str) -> str:
        return self.names.link(self.role(host))

    def cut(self, host: str) -> None:
        """Cut ``host`` off the network: its bridge port goes down, its processes keep running."""
        net.ip("link", "set", self._link(host), "down")

    def restore(self, host: str) -> None:
        net.ip("link", "set", self._link(host), "up")

    def kill_worker(self, host: str) -> None:
        """SIGKILL ``host``'s worker JVM (its executors notice and exit on their own)."""
        pid = self._pid(host, "worker")
        if pid is not None:
            net.signal_ours(pid, signal.SIGKILL, self.names, group=False)

    def start_worker(self, host: str, timeout: float = 120) -> None:
        """Start ``host``'s worker (again) and wait until the master lists it alive."""
        ns = self.ns(host)
        self._start_worker(ns)
        self._wait(lambda s: ns in self._alive_workers(s), f"worker {ns} registered", timeout)

    def _start_worker(self, ns: str) -> None:
        args = [
            "--host", self.hosts[ns], "--port", str(WORKER_PORT),
            "--webui-port", str(WORKER_UI), "--cores", str(self.cores),
            "--memory", self.memory, "--work-dir", str(self.dir(ns) / "work"), self.master,
        ]  # fmt: skip
        self._spark(ns, "worker", _WORKER, args)

    # --- the master's view -------------------------------------------------------------------

    def state(self, timeout: float = 5.0) -> dict[str, Any]:
        """The master's JSON (``/json/``), fetched from the driver host; {} if unreachable."""

        def fetch() -> dict[str, Any]:
            try:
                with urllib.request.urlopen(f"{self.master_ui}/json/", timeout=timeout) as answer:
                    found: dict[str, Any] = json.loads(answer.read())
                    return found
            except urllib.error.HTTPError as exc:
                exc.close()  # it holds the connection's socket
                return {}

        try:
            return net.inside(self.driver, fetch)
        except (OSError, ValueError):
            return {}

    def _alive_workers(self, state: Mapping[str, Any]) -> list[str]:
        """The hosts of the workers that the master lists as ALIVE (by their address)."""
        by_address = {address: ns for ns, address in self.hosts.items()}
        return [
            by_address.get(w.get("host", ""), w.get("host", ""))
            for w in state.get("workers", [])
            if w.get("state") == "ALIVE"
        ]

    # --- up and down -------------------------------------------------------------------------

    def up(self, timeout: float = 120, watchdog: bool = True) -> None:
        """Make the network and start everything; on any failure, remove it all and raise."""
        try:
            import pyspark  # noqa: F401 - fail early, before any namespace is made

            net.check_available()
            if shutil.which("java") is None and "JAVA_HOME" not in os.environ:
                raise Unavailable("Spark needs Java: no java on PATH and no JAVA_HOME")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        net.cleanup(self.names)  # what a crashed run left
        try:
            if watchdog:
                atexit.register(self.down)
                here = str(Path(__file__).parent)
                tag, index = self.names.tag, str(self.names.index)
                self._watchdog = subprocess.Popen(
                    [sys.executable, "-c", _WATCHDOG, here, tag, index, str(self.folder)],
                    stdin=subprocess.PIPE,
                    start_new_session=True,
                )
            net.create(self.names, self.workers)
            self._prepare_folders()
            self._start(timeout)
        except BaseException:
            self.down()
            raise

    def _prepare_folders(self) -> None:
        for ns in self.hosts:
            for sub in ("home", "tmp", "logs", "work", "cauce"):
                (self.dir(ns) / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "pids").mkdir(exist_ok=True)
        script = self.folder / "gpus.sh"
        addresses = json.dumps([str(i) for i in range(self.gpus)])
        script.write_text(f'#!/bin/sh\necho \'{{"name": "gpu", "addresses": {addresses}}}\'\n')
        script.chmod(0o755)

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        s3 = self.names.ns("s3")
        self._detach(
            s3, "moto", [sys.executable, "-m", "moto.server", "-H", self.hosts[s3], "-p", "5000"]
        )
        args = ["--host", self.master_address, "--port", str(MASTER_PORT)]
        self._spark(self.names.ns("m"), "master", _MASTER, [*args, "--webui-port", "8080"])
        while not self.reachable("d", "m", MASTER_PORT):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the master did not start: {self._log('master')}")
            time.sleep(0.3)
        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            list(pool.map(self._start_worker, self.worker_hosts))
        self._wait(
            lambda s: sorted(self._alive_workers(s)) == sorted(self.worker_hosts),
            f"{self.workers} workers registered",
            deadline - time.monotonic(),
        )
        self._wait_s3(deadline)

    def _wait_s3(self, deadline: float) -> None:
        def ping() -> bool:
            try:
                with urllib.request.urlopen(f"{self.s3}/moto-api/", timeout=2):
                    return True
            except urllib.error.HTTPError as exc:
                exc.close()
                return False
            except OSError:
                return False

        while not net.inside(self.driver, ping):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto's server did not answer at {self.s3}: {self._log('moto')}"
                )
            time.sleep(0.2)

    def _wait(self, done: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            state = self.state()
            if done(state):
                return
            if time.monotonic() >= deadline:
                logs = self._log("master")
                raise RuntimeError(f"timed out waiting for {what}: {state}\n{logs}")
            time.sleep(0.3)

    def _spark(self, ns: str, role: str, cls: str, args: list[str]) -> None:
        import pyspark

        home = Path(pyspark.__file__).parent
        address = self.hosts[ns]
        env = {
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": address,
            "SPARK_PUBLIC_DNS": address,
            "SPARK_LOCAL_DIRS": str(self.dir(ns) / "tmp"),
            "SPARK_LOG_DIR": str(self.dir(ns) / "logs"),
            "SPARK_WORKER_DIR": str(self.dir(ns) / "work"),
            "SPARK_CONF_DIR": str(self.dir(ns) / "home"),
            "SPARK_DAEMON_MEMORY": "384m",
            # Quick to start, small (the machine is shared): C1 only, one GC thread.
            "SPARK_DAEMON_JAVA_OPTS": _JVM_OPTS,
            "SPARK_LAUNCHER_OPTS": _JVM_OPTS,
            "SPARK_WORKER_OPTS": (
                f"-Dspark.worker.resource.gpu.amount={self.gpus} "
                f"-Dspark.worker.resource.gpu.discoveryScript={self.folder / 'gpus.sh'}"
            ),
        }
        self._detach(ns, role, ["bash", str(home / "bin" / "spark-class"), cls, *args], env)

    def _detach(
        self, ns: str, role: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> int:
        """Start ``argv`` in ``ns``, detached in a session of its own; returns its pid."""
        log = self.dir(ns) / "logs" / f"{role}.out"
        # In a shell without job control, the background child is no group leader, so setsid
        # execs in it (no fork): $! is the pid of the command itself, and of its group.
        shell = 'setsid "$@" >>"$LOG" 2>&1 </dev/null & echo $!'
        done = self.run_on(
            ns, ["sh", "-c", shell, "sh", *argv], env={**(env or {}), "LOG": str(log)}
        )
        if done.returncode != 0 or not done.stdout.strip().isdigit():
            raise RuntimeError(f"cannot start {role} on {ns}: {done.stdout}{done.stderr}")
        pid = int(done.stdout.strip())
        (self.folder / "pids" / f"{ns}.{role}.pid").write_text(f"{pid}\n")
        return pid

    def _pid(self, host: str, role: str) -> int | None:
        try:
            path = self.folder / "pids" / f"{self.ns(host)}.{role}.pid"
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _log(self, role: str, host: str = "m", lines: int = 20) -> str:
        host = "s3" if role == "moto" else host
        try:
            text = (self.dir(host) / "logs" / f"{role}.out").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def down(self) -> list[str]:
        """Stop every process we started (by pid, then its group), kill what is left in our
        namespaces, remove the network and the folder. Returns what the sweep still found."""
        pids = []
        for path in sorted((self.folder / "pids").glob("*.pid")):
            try:
                pids.append(int(path.read_text().strip()))
            except (OSError, ValueError):
                continue
        net.stop(pids, self.names)
        swept = net.cleanup(self.names)
        atexit.unregister(self.down)
        if self._watchdog is not None:
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            self._watchdog.wait(timeout=60)
            self._watchdog = None
        shutil.rmtree(self.folder, ignore_errors=True)
        return [s for s in swept if s.startswith("process")]
