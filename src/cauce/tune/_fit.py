"""How many trials fit on the cluster at once: ``parallel`` is a wish, the host's CPUs, memory
and GPUs are the limit. Pure: a cluster's description and a trial's gang request in, a width
and a sentence for people out."""

from __future__ import annotations

import math

from cauce.cluster.api import GangRequest, HostCapacity

__all__ = ["fit_parallel"]


def fit_parallel(hosts: list[HostCapacity], request: GangRequest, parallel: int) -> tuple[int, str]:
    """``parallel`` capped at the trials that fit at once on a cluster of one host (several
    hosts, or a cluster that cannot say, keep ``parallel``: the cluster places or makes wait),
    and what to tell people when it is capped (else "")."""
    if len(hosts) != 1 or parallel <= 1:
        return parallel, ""
    host = hosts[0]
    limits: list[tuple[int, str, str]] = []  # (trials that fit, a trial needs, the host has)
    cpus = request.declared_cpus  # undeclared CPUs share the host, as under torchrun
    if cpus > 0:
        limits.append((_fits(host.cpus, cpus), f"{cpus:g} CPUs", f"{host.cpus:g}"))
    if request.gpus > 0:
        limits.append((len(host.gpus) // request.gpus, f"{request.gpus} GPUs", str(len(host.gpus))))
    if request.memory > 0 and host.memory > 0:
        limits.append(
            (
                host.memory // request.memory,
                f"{_gib(request.memory)} of memory",
                _gib(host.memory),
            )
        )
    if not limits:
        return parallel, ""
    width, need, have = min(limits, key=lambda limit: limit[0])
    if width >= parallel or width < 1:  # < 1: the gang can never fit, which check() says
        return parallel, ""
    return width, (
        f"parallel {parallel}, but this host fits {width} trial{'s' if width > 1 else ''} at a "
        f"time (each needs {need}, the host has {have}): running {width} at a time, the next "
        "as soon as one ends"
    )


def _fits(have: float, need: float) -> int:
    return math.floor(have / need + 1e-9)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
