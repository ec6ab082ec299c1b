"""The driver's address: where executors on other hosts reach the driver.

One address serves Spark's own driver endpoint (``spark.driver.host``), the server the tasks of a
gang stream their output to (``_links``), and Horovod's key-value store. Chosen, first found:

1. ``spark.cauce.driverHost`` (the spec's ``spark:`` or ``--conf``), then ``$CAUCE_DRIVER_HOST``;
2. ``spark.driver.host``;
3. automatically: ``127.0.0.1`` for ``local[N]``; else the address of this host's interface that
   routes to the master (``spark://``, ``k8s://``; YARN's ResourceManager from
   ``yarn-site.xml``), found by "connecting" a UDP socket there (no packet is sent) and reading
   its local address: never loopback for a master on another host;
4. else Spark's own choice (its ``spark.driver.host`` once the application runs).

The driver listens on ``spark.driver.bindAddress`` when set, else on the address itself when it
is one of this host's, else on every interface (an address behind NAT, a Kubernetes service).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit
from xml.etree import ElementTree

from cauce.cluster.api import DriverAddress

__all__ = ["announce", "bind_for", "is_local", "is_loopback", "master_host", "resolve", "route_to"]

ENV = "CAUCE_DRIVER_HOST"
KEY = "spark.cauce.driverHost"
_ANY = "0.0.0.0"


def is_loopback(host: str) -> bool:
    """True if ``host`` (an address or a name) is or resolves to a loopback address."""
    try:
        address = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    except (OSError, IndexError):
        return False
    return ipaddress.ip_address(str(address).split("%")[0]).is_loopback


def is_local(host: str) -> bool:
    """True if this host can listen on ``host`` (it is one of its addresses, or names one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host.strip("[]"), 0))
    except OSError:
        return False
    return True


def route_to(host: str, port: int = 9) -> str | None:
    """This host's address on the interface that routes to ``host``; None if there is none.
    A UDP ``connect`` only picks the route: nothing is sent."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, kind, proto, _, where in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.connect(where)
                return str(sock.getsockname()[0])
        except OSError:
            continue
    return None


def master_host(master: str, environ: Mapping[str, str]) -> str | None:
    """The host of the cluster manager that ``master`` names, where it can be told."""
    if master.startswith("spark://"):
        first = master[len("spark://") :].split(",", maxsplit=1)[0]
        return first.rpartition(":")[0] or first
    if master.startswith("k8s://"):
        url = master[len("k8s://") :]
        return urlsplit(url if "://" in url else f"https://{url}").hostname
    if master == "yarn":
        return _yarn_resourcemanager(environ)
    return None


def _yarn_resourcemanager(environ: Mapping[str, str]) -> str | None:
    for var in ("YARN_CONF_DIR", "HADOOP_CONF_DIR"):
        folder = environ.get(var)
        if not folder:
            continue
        try:
            root = ElementTree.parse(os.path.join(folder, "yarn-site.xml")).getroot()
        except (OSError, ElementTree.ParseError):
            continue
        values = {p.findtext("name"): p.findtext("value") for p in root.iter("property")}
        address = values.get("yarn.resourcemanager.address") or ""
        host = values.get("yarn.resourcemanager.hostname") or address.rpartition(":")[0]
        if host and "$" not in host:
            return host
    return None


def bind_for(advertised: str, conf: Mapping[str, str]) -> str:
    """Where the driver listens when executors reach it at ``advertised``."""
    given = conf.get("spark.driver.bindAddress")
    if given:
        return given
    return advertised if is_local(advertised) else _ANY


def resolve(
    master: str, conf: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[DriverAddress, str] | None:
    """The driver's address and how it was chosen; None leaves the choice to Spark."""
    for value, source in (
        (conf.get(KEY), KEY),
        (environ.get(ENV), ENV),
        (conf.get("spark.driver.host"), "spark.driver.host"),
    ):
        if value:
            return DriverAddress(bind_for(value, conf), value), f"from {source}"
    if master.startswith("local"):
        return DriverAddress(conf.get("spark.driver.bindAddress", "127.0.0.1"), "127.0.0.1"), (
            "Spark runs in this process"
        )
    host = master_host(master, environ)
    found = route_to(host) if host else None
    if found is None:
        return None
    return DriverAddress(bind_for(found, conf), found), f"the interface that routes to {host}"


def announce(address: DriverAddress, how: str, master: str) -> None:
    """One line on stderr as the application starts (like Spark's own banner): the address
    executors must reach, and how to change it; a warning for loopback with a remote master."""
    if master.startswith("local"):
        return
    line = f"cauce: driver address {address.advertised} ({how}; "
    line += f"reachable from executors: set {ENV} to change)"
    if is_loopback(address.advertised) and not _master_is_loopback(master):
        line += (
            f"\ncauce: warning: {address.advertised} is a loopback address: executors on other "
            f"hosts cannot reach the driver; set {ENV} to an address of this host that they reach"
        )
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _master_is_loopback(master: str) -> bool:
    host = master_host(master, os.environ)
    return host is not None and is_loopback(host)
