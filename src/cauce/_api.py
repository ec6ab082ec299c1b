"""The public entry points behind ``import cauce``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cauce.cluster import open_cluster
from cauce.gang import Console, JobDriver, JobResult
from cauce.history import cauce_home, open_store
from cauce.spec import JobSpec, job_spec

__all__ = ["plan", "run"]


def run(
    job: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    *,
    cluster: str | None = None,
    history: str | None = None,
    home: str | os.PathLike[str] | None = None,
    console: Console | None = None,
) -> JobResult:
    """Run a job (a spec, a mapping of its fields or its YAML file's path) to the end and
    return how it ended.

    ``cluster`` defaults to the spec's ``cluster``, then ``$CAUCE_CLUSTER``, then ``local``.
    A gang that fails is reported in the result (``result.ok`` is False), not raised.
    """
    spec = job_spec(job)
    with open_cluster(cluster, spec) as backend:
        store = open_store(history)
        try:
            root = Path(home) if home is not None else cauce_home()
            return JobDriver(spec, backend, store, root, console=console).run()
        finally:
            store.close()


def plan(
    job: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    *,
    cluster: str | None = None,
    history: str | None = None,
    home: str | os.PathLike[str] | None = None,
) -> str:
    """The resolved plan of a job (what ``cauce run --dry-run`` prints); starts nothing."""
    spec = job_spec(job)
    with open_cluster(cluster, spec) as backend:
        store = open_store(history)
        try:
            root = Path(home) if home is not None else cauce_home()
            return JobDriver(spec, backend, store, root).dry_run()
        finally:
            store.close()
