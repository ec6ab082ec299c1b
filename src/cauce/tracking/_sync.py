"""``cauce mlflow sync``: replay a spool file (what a tracker could not send) to MLflow.

A spool is a sequence of segments, each a ``target`` line (the server, the experiment and the
run's id when it was created before the outage) followed by the operations not sent, in order.
Replayed in full, the file is renamed ``*.synced``; on a failure it stays, and the error says
which operation failed (a later sync starts again from the top: metrics sent twice show twice in
MLflow's history, nothing is lost).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cauce.errors import TrackingError
from cauce.tracking.api import Target

__all__ = ["SPOOL_FILE", "SyncResult", "replay"]

#: The spool's name in a run folder.
SPOOL_FILE = "mlflow-spool.jsonl"


@dataclass(frozen=True)
class SyncResult:
    spool: str
    operations: int
    runs: tuple[str, ...]
    skipped: int = 0  # lines cut by a crash, left out


def _read(spool: Path) -> tuple[list[dict[str, Any]], int]:
    """The operations of ``spool`` and how many lines cut by a crash were skipped."""
    try:
        lines = spool.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TrackingError(f"{spool}: no spool file here (nothing was left unsent)") from None
    ops = []
    skipped = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ops.append(json.loads(line))
            continue
        except ValueError:
            pass
        # A line cut by a crash (the last one, or one the next run began after), or (written
        # before cauce began each write on a line of its own) one with the next run's first
        # line glued on, whose whole tail is kept.
        tail = line.rfind('{"op":', 1)
        try:
            if tail <= 0:
                raise ValueError(line)
            ops.append(json.loads(line[tail:]))
        except ValueError:
            if number != len(lines) and not line.startswith('{"op":'):
                raise TrackingError(f"{spool}:{number}: not a JSON line") from None
        skipped += 1
    if ops and ops[0].get("op") != "target":
        raise TrackingError(f"{spool}: does not start with a target line")
    return ops, skipped


def replay(spool: Path, uri: str | None = None) -> SyncResult:
    """Send every operation of ``spool`` (to ``uri`` instead of the recorded server if given)."""
    from cauce.tracking._client import Session

    ops, skipped = _read(spool)
    session: Session | None = None
    run_id: str | None = None
    runs: list[str] = []
    done = 0
    for op in ops:
        if op["op"] == "target":
            session = Session(Target(uri or op["uri"], op["experiment"]))
            run_id = op.get("run_id")
            continue
        assert session is not None
        try:
            run_id = session.apply(op, run_id)
        except TrackingError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise TrackingError(
                f"{spool}: operation {done + 1} ({op['op']}) failed against "
                f"{session.target.uri}: {first}; the spool is kept, sync again once MLflow answers"
            ) from exc
        if run_id is not None and run_id not in runs:
            runs.append(run_id)
        done += 1
    os.replace(spool, spool.with_name(spool.name + ".synced"))
    return SyncResult(str(spool), done, tuple(runs), skipped)
