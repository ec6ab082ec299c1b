"""The network of the multi-host test cluster: Linux network namespaces joined by a bridge.

Each host is a network namespace ``cauce-<tag><role>`` (roles ``m``, ``s3``, ``d``, ``w1``..)
with loopback up and one end of a veth pair (``eth0``) holding its address on a private /24
(``10.213.<index>.0/24``, unused on this machine); the other end (``cv<tag><role>``) is a port of
the bridge ``cauce-<tag>br0``. The bridge has no address: the root namespace (where the tests
run, and other tests use 127.0.0.1) is not on that network; only the namespaces we make are.

Each namespace has its own ``/etc/netns/NAME/hosts`` (``ip netns exec`` mounts it over
``/etc/hosts``) where this machine's host name and the namespace's own name map to the
namespace's address, and every other host's name to its address: a host name that resolves to
127.0.0.1 makes Gloo and Spark advertise loopback, which another host cannot reach.

Everything here is named from the tag alone, so :func:`cleanup` removes what an earlier run that
crashed left behind, without any state. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class Unavailable(RuntimeError):
    """This machine cannot make the cluster (not root, no ``ip``, no namespaces): the reason."""


@dataclass(frozen=True)
class Names:
    """The names and addresses of one cluster instance; ``tag`` tells instances apart."""

    tag: str = ""
    index: int = 0  # the third byte of the subnet: 10.213.<index>.0/24

    @property
    def bridge(self) -> str:
        return f"cauce-{self.tag}br0"

    def ns(self, role: str) -> str:
        return f"cauce-{self.tag}{role}"

    def link(self, role: str) -> str:
        return f"cv{self.tag}{role}"

    def address(self, role: str) -> str:
        fixed = {"m": 2, "s3": 3, "d": 4}
        last = fixed[role] if role in fixed else 10 + int(role[1:])
        return f"10.213.{self.index}.{last}"

    def roles(self, workers: int) -> list[str]:
        return ["m", "s3", "d", *(f"w{i}" for i in range(1, workers + 1))]

    def ours(self, name: str, prefix: str) -> bool:
        """True if ``name`` is a namespace (prefix ``cauce-``) or link (``cv``) of this tag."""
        return re.fullmatch(rf"{prefix}{re.escape(self.tag)}(m|s3|d|w\d+)", name) is not None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def check_available() -> None:
    """Raise :class:`Unavailable` with the reason if namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise Unavailable("network namespaces need root (ip netns add); not root here")
    if shutil.which("ip") is None:
        raise Unavailable("the ip command (iproute2) is not installed")


def namespaces() -> list[str]:
    done = ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def links() -> list[str]:
    done = ip("-o", "link", "show", check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()]


def inode(ns: str) -> int:
    return os.stat(NETNS_DIR / ns).st_ino


def pids_in(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns`` (compared by the namespace's inode)."""
    try:
        wanted = inode(ns)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == wanted:
                    found.append(int(entry))
            except OSError:
                continue
    return sorted(found)


def emptied(ns: str, within: float = 30.0) -> list[str]:
    """What still runs on host ``ns`` once ``within`` seconds have passed (a job's reaper and
    its tasks end in their grace period, after the driver), as command lines."""
    deadline = time.monotonic() + within
    while (pids := pids_in(ns)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = []
    for pid in pids:
        try:
            left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # ended meanwhile
    return left


def hosts_file(names: Names, role: str, workers: int) -> str:
    """The ``/etc/hosts`` that host ``role`` sees."""
    me = names.address(role)
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"{me}\t{names.ns(role)} {socket.gethostname()}")
    lines += [
        f"{names.address(other)}\t{names.ns(other)}"
        for other in names.roles(workers)
        if other != role
    ]
    return "\n".join(lines) + "\n"


def create(names: Names, workers: int) -> None:
    """Make the bridge and the namespaces (call :func:`cleanup` on failure)."""
    check_available()
    ip("link", "add", names.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
    ip("link", "set", names.bridge, "up")
    for role in names.roles(workers):
        ns, link = names.ns(role), names.link(role)
        try:
            ip("netns", "add", ns)
        except RuntimeError as exc:
            raise Unavailable(f"cannot make network namespace {ns}: {exc}") from exc
        folder = ETC_NETNS / ns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts").write_text(hosts_file(names, role, workers), encoding="utf-8")
        ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", link, "master", names.bridge)
        ip("link", "set", link, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{names.address(role)}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")


def cleanup(names: Names) -> list[str]:
    """Remove every process, namespace, link, bridge and ``/etc/netns`` folder of this tag,
    from this run or one that crashed. Returns what it removed (for the caller to report)."""
    removed: list[str] = []
    ours = [ns for ns in namespaces() if names.ours(ns, "cauce-")]
    for ns in ours:
        pids = pids_in(ns)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid} in {ns}")
            except OSError:  # gone already (or not ours to kill: then ip fails below)
                continue
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.05)
    for ns in ours:
        ip("netns", "delete", ns, check=False)
        removed.append(f"namespace {ns}")
    for link in links():
        if names.ours(link, "cv") or link == names.bridge:
            ip("link", "delete", link, check=False)
            removed.append(f"link {link}")
    if ETC_NETNS.is_dir():
        for folder in ETC_NETNS.iterdir():
            if names.ours(folder.name, "cauce-"):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(f"folder {folder}")
        if not any(ETC_NETNS.iterdir()):
            ETC_NETNS.rmdir()
    return removed


@contextlib.contextmanager
def made(names: Names, workers: int) -> Iterator[Names]:
    """The hosts of ``names`` for the block (what a crashed run left removed first), removed
    after it and checked gone. Raises :class:`Unavailable` where namespaces cannot be made,
    having removed what was made."""
    check_available()
    cleanup(names)
    try:
        create(names, workers)
        yield names
    finally:
        cleanup(names)
        assert not leftovers(names)


def leftovers(names: Names) -> list[str]:
    """What of this tag exists now (empty after :func:`cleanup`)."""
    found = [f"namespace {ns}" for ns in namespaces() if names.ours(ns, "cauce-")]
    found += [f"link {link}" for link in links() if names.ours(link, "cv") or link == names.bridge]
    if ETC_NETNS.is_dir():
        found += [f"folder {f}" for f in ETC_NETNS.iterdir() if names.ours(f.name, "cauce-")]
    return found


def signal_ours(pid: int, sig: signal.Signals, names: Names, *, group: bool) -> bool:
    """Send ``sig`` to ``pid`` (and to its process group, if it leads one) if it runs in one
    of the namespaces of ``names``: a pid reused by another process is left alone."""
    try:
        wanted = {inode(ns) for ns in namespaces() if names.ours(ns, "cauce-")}
        if os.stat(f"/proc/{pid}/ns/net").st_ino not in wanted:
            return False
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except OSError:
        return False


def stop(pids: list[int], names: Names, grace: float = 20.0) -> None:
    """SIGTERM ``pids`` and their groups, then SIGKILL those left after ``grace`` seconds."""
    sent = [pid for pid in pids if signal_ours(pid, signal.SIGTERM, names, group=True)]
    deadline = time.monotonic() + grace
    while sent and time.monotonic() < deadline:
        sent = [pid for pid in sent if _alive(pid)]
        time.sleep(0.1)
    for pid in sent:
        signal_ours(pid, signal.SIGKILL, names, group=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def inside(ns: str, call: Callable[[], T]) -> T:
    """Run ``call`` in a thread that has entered namespace ``ns`` (setns acts per thread):
    sockets it opens live there. Name lookups still use this process's /etc/hosts."""
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns}")
            finally:
                os.close(fd)
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    error = outcome.pop("error", None)
    if error is not None:
        # popped, and dropped on the way out: a dict that held the exception its own traceback
        # refers to would be a cycle, and an HTTPError in a cycle is collected later with its
        # socket open, a ResourceWarning in whichever test runs then
        try:
            raise error  # type: ignore[misc]
        finally:
            del error
    return outcome["value"]  # type: ignore[return-value]


def reachable(ns: str, address: str, port: int, timeout: float = 2.0) -> bool:
    """True if a TCP connection from namespace ``ns`` to ``address:port`` opens in time."""

    def connect() -> bool:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return True
        except OSError:
            return False

    return inside(ns, connect)
