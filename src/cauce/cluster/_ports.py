"""Free TCP ports for a gang's rendezvous, chosen where outgoing connections cannot take them.

A port found free by binding port 0 comes from the kernel's ephemeral range, which is also where
every outgoing connection gets its local port: between the moment it is found and the moment a
task listens on it, another job's connection (a Gloo peer, an HTTP client) may take it, and the
task fails with EADDRINUSE. Ports are therefore drawn at random below that range (on Linux,
``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default), checked free by binding
them, and not handed out twice by this process within a minute.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["free_ports"]

_LOWEST = 10_000
_REUSE_AFTER_S = 60.0
_lock = threading.Lock()
_handed_out: dict[int, float] = {}  # port -> when this process last handed it out


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default; IANA's dynamic range starts at 49152


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_zero(count: int, host: str) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(_family(host), socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _random_order(low: int, high: int) -> Iterator[int]:
    """Every port of [low, high) once, in a random order: a random start and a random stride
    prime to the range's size (enough to keep concurrent drivers from colliding)."""
    size = high - low
    rng = random.SystemRandom()
    start = rng.randrange(size)
    stride = rng.randrange(1, size)
    while math.gcd(stride, size) != 1:
        stride += 1
    for i in range(size):
        yield low + (start + i * stride) % size


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free right now on ``host``, outside the ephemeral range."""
    low, _ = _ephemeral_range()
    if low - _LOWEST < 100 * count:  # an unusual ephemeral range: the kernel's choice
        return _bind_zero(count, host)
    # A random order drawn lazily: shuffling the whole range with SystemRandom (one urandom
    # call per port) cost ~70 ms per gang, paid by every trial of a study.
    candidates = _random_order(_LOWEST, low)
    socks: list[socket.socket] = []
    now = time.monotonic()
    with _lock:
        for stale in [p for p, t in _handed_out.items() if now - t > _REUSE_AFTER_S]:
            del _handed_out[stale]
        try:
            for port in candidates:
                if len(socks) == count:
                    break
                if port in _handed_out:
                    continue
                sock = socket.socket(_family(host), socket.SOCK_STREAM)
                try:
                    sock.bind((host, port))
                except OSError:
                    sock.close()
                    continue
                socks.append(sock)
            ports = [sock.getsockname()[1] for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        if len(ports) < count:
            return _bind_zero(count, host)
        for port in ports:
            _handed_out[port] = now
    return ports
