"""On an executor: the network settings a task of a gang that spans several hosts needs.

Gloo (``torch.distributed``'s CPU backend) picks the address it advertises to its peers from
the host name, unless ``GLOO_SOCKET_IFNAME`` names an interface; a host name that resolves to a
loopback address (``127.0.1.1`` in many ``/etc/hosts``) makes it advertise loopback, and peers
on other hosts then fail to connect. TensorPipe (``torch.distributed.rpc``) reads
``TP_SOCKET_IFNAME`` the same way. So, in a gang spread over several hosts, each task gets both
set to the interface that holds its own address (the one its executor reports, which the other
tasks reach it at), unless the job or the executor set them already; and a task whose host name
resolves to loopback says so in its log. Standard library only: executors import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Mapping

from cauce.frameworks.api import GangLayout

__all__ = ["IFNAME_VARIABLES", "interface_of", "network_env"]

#: The variables set to the task's interface: Gloo's and TensorPipe's.
IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME")
_SIOCGIFADDR = 0x8915


def interface_of(address: str) -> str | None:
    """The name of the interface whose (primary IPv4) address is ``address``; None if none is
    (or the address is a name, or IPv6). Linux only."""
    with (
        contextlib.suppress(OSError, AttributeError),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name[:15].encode())
            try:
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on it
                continue
            if socket.inet_ntoa(answer[20:24]) == address:
                return name
    return None


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def network_env(
    layout: GangLayout, task_id: str, env: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """(variables to add to the task's ``env``, lines for its log) for ``task_id``."""
    hosts = {slot.host for slot in layout.slots}
    if len(hosts) < 2:
        return {}, []
    host = layout.slot(task_id).host
    lines = []
    name = socket.gethostname()
    try:
        resolved = socket.gethostbyname(name)
    except OSError:
        resolved = ""
    if _loopback(resolved):
        lines.append(
            f"cauce: warning: this host's name {name} resolves to {resolved}, a loopback "
            f"address, and the gang spans {len(hosts)} hosts: a framework that advertises the "
            "address of the host name (Gloo without GLOO_SOCKET_IFNAME) gives its peers "
            "loopback; fix /etc/hosts or DNS (see docs/spark.md)"
        )
    try:
        address = socket.gethostbyname(host)
    except OSError:
        return {}, lines
    iface = interface_of(address)
    if iface is None or _loopback(address):
        return {}, lines
    added = {var: iface for var in IFNAME_VARIABLES if not env.get(var)}
    if added and lines:
        lines.append(f"cauce: {', '.join(added)} set to {iface} (the interface of {address})")
    return added, lines
