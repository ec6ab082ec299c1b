"""Rendezvous ports: free, distinct, and outside the range outgoing connections draw from."""

from __future__ import annotations

import socket

import pytest

from cauce.cluster._ports import _ephemeral_range, free_ports


def test_ports_are_free_distinct_outside_the_ephemeral_range_and_not_handed_out_twice() -> None:
    low, high = _ephemeral_range()
    seen: set[int] = set()
    for _ in range(20):
        ports = free_ports(4)
        assert len(set(ports)) == 4
        assert not seen & set(ports)  # not again within a minute, in this process
        seen |= set(ports)
        for port in ports:
            assert not low <= port <= high
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))  # free indeed


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import cauce.cluster._ports as ports_module

    busy = socket.socket()
    for port in range(15_000, 16_000):
        try:
            busy.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    with busy:
        taken = busy.getsockname()[1]
        # 400 candidates starting at the busy one: drawn at random, it would come up often
        monkeypatch.setattr(ports_module, "_LOWEST", taken)
        monkeypatch.setattr(ports_module, "_ephemeral_range", lambda: (taken + 400, 60_999))
        monkeypatch.setattr(ports_module, "_handed_out", {})
        drawn = [p for _ in range(60) for p in free_ports(3)]
        assert taken not in drawn
        assert all(taken < p < taken + 400 for p in drawn)
