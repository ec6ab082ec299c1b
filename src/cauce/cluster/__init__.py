"""Resource managers. ``open_cluster`` picks one by address, imports it lazily, and closes it."""

from __future__ import annotations

from cauce.cluster._open import cluster_address, get_cluster, open_cluster
from cauce.cluster._ports import free_ports
from cauce.cluster._procs import Reaper
from cauce.cluster._reaper import group_alive
from cauce.cluster._warm import WarmStarts
from cauce.cluster.api import (
    Cluster,
    DriverAddress,
    GangRequest,
    HostCapacity,
    Reservation,
    RunningGang,
    TaskExit,
    TaskLaunch,
    TaskPlace,
    TaskRequest,
    Waiting,
)

__all__ = [
    "Cluster",
    "DriverAddress",
    "GangRequest",
    "HostCapacity",
    "Reaper",
    "Reservation",
    "RunningGang",
    "TaskExit",
    "TaskLaunch",
    "TaskPlace",
    "TaskRequest",
    "Waiting",
    "WarmStarts",
    "cluster_address",
    "free_ports",
    "get_cluster",
    "group_alive",
    "open_cluster",
]
