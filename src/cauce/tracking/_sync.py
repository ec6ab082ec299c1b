"""``cauce mlflow sync``: replay a spool file (what a tracker could not send) to MLflow.

A spool is a sequence of segments, each a ``target`` line (the server, the experiment and the
run's id when it was created before the outage) followed by the operations not sent, in order.
Replayed in full, the file is renamed ``*.synced``; on a failure it stays, and the error says
which operation failed (a later sync starts again from the top: metrics sent twice show twice in
MLflow's history, nothing is lost). A file that is not a spool (its first line is not a
``target`` record, or a whole line is not a record) is refused before anything is sent, and
never renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cauce.errors import SpecError, TrackingError
from cauce.tracking.api import Target

if TYPE_CHECKING:
    from cauce.tracking._client import Session

__all__ = ["SPOOL_FILE", "SyncResult", "replay"]

#: The spool's name in a run folder.
SPOOL_FILE = "mlflow-spool.jsonl"

#: The keys each kind of record needs (what the tracker writes and the replay reads).
_NEEDS: dict[str, tuple[str, ...]] = {
    "target": ("uri", "experiment"),
    "create": ("time",),
    "batch": (),
    "artifacts": ("path",),
    "text": ("text", "file"),
    "register": ("name", "artifact_path", "tags"),
    "end": ("status", "time"),
}
_CUT = '{"op":'  # how every record begins: a line cut by a crash begins so too
_MIDDLE = "a line cut short in the middle of the file"


@dataclass(frozen=True)
class SyncResult:
    spool: str
    operations: int
    runs: tuple[str, ...]
    skipped: int = 0  # lines cut by a crash, left out


def _refuse(spool: Path, line: int, problem: str) -> SpecError:
    return SpecError(
        "",
        f"{problem}: not an MLflow spool (cauce mlflow sync takes a job or the "
        f"{SPOOL_FILE} a tracking outage left); nothing was sent and the file is left as it is",
        source=str(spool),
        line=line,
    )


def _record(spool: Path, number: int, op: Any) -> dict[str, Any]:
    """``op`` if it is a spool record, else the refusal naming the line."""
    if not isinstance(op, dict) or op.get("op") not in _NEEDS:
        kind = op.get("op") if isinstance(op, dict) else None
        what = f"unknown operation {kind!r}" if kind else "not a spool record"
        raise _refuse(spool, number, what)
    missing = [key for key in _NEEDS[op["op"]] if key not in op]
    if missing:
        raise _refuse(spool, number, f"a {op['op']} record without {', '.join(missing)}")
    if op["op"] == "target" and not all(
        isinstance(op[key], str) and op[key] for key in ("uri", "experiment")
    ):
        raise _refuse(spool, number, "a target record whose uri or experiment is not a name")
    return op


def _lines(spool: Path) -> list[str]:
    try:
        return spool.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TrackingError(f"{spool}: no spool file here (nothing was left unsent)") from None
    except IsADirectoryError:
        raise SpecError("", "is a folder: give the spool file in it", source=str(spool)) from None
    except UnicodeDecodeError:
        raise _refuse(spool, 0, "not UTF-8 text") from None
    except OSError as exc:
        raise SpecError("", f"cannot be read: {exc.strerror or exc}", source=str(spool)) from None


def _read(spool: Path) -> tuple[list[dict[str, Any]], int]:
    """The operations of ``spool`` and how many lines cut by a crash were skipped. Only a line
    after records, beginning like one, may be cut: the last one, or one the next run's
    ``target`` line follows (or, written before cauce began each write on a line of its own,
    is glued to it, and is kept)."""
    lines = _lines(spool)
    ops: list[dict[str, Any]] = []
    skipped = 0
    cut_before = 0  # the number of a cut line whose next record must be a target
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            op = json.loads(line)
        except ValueError:
            if not ops or not line.startswith(_CUT):
                raise _refuse(spool, number, "not a JSON line") from None
            if cut_before:
                raise _refuse(spool, cut_before, _MIDDLE) from None
            skipped += 1
            cut_before = number
            tail = line.rfind(_CUT, 1)
            try:
                op = json.loads(line[tail:]) if tail > 0 else None
            except ValueError:
                op = None
            if op is None:
                continue
        op = _record(spool, number, op)
        if not ops and op["op"] != "target":
            raise _refuse(spool, number, "does not start with a target record")
        if cut_before and op["op"] != "target":
            raise _refuse(spool, cut_before, _MIDDLE)
        cut_before = 0
        ops.append(op)
    if not ops:
        raise _refuse(spool, 0, "no records")
    return ops, skipped


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _session(spool: Path, uri: str | None, op: dict[str, Any]) -> Session:
    """A client for the segment that ``op`` (a target record) begins; a tracking URI mlflow
    cannot use is one error line (a usage error when its scheme is unknown)."""
    from cauce.tracking._client import Session, unsupported_uri

    target = Target(uri or op["uri"], op["experiment"])
    where = f"--uri {uri}" if uri else f"{spool}: the recorded tracking URI {op['uri']}"
    try:
        return Session(target)
    except TrackingError:
        raise
    except Exception as exc:
        if unsupported_uri(exc):
            fix = "" if uri else "; give the server with --uri URI"
            raise SpecError("", f"{where}: not a tracking URI MLflow supports{fix}") from None
        raise TrackingError(f"{where}: MLflow cannot use it: {_first(exc)}") from None


def replay(spool: Path, uri: str | None = None) -> SyncResult:
    """Send every operation of ``spool`` (to ``uri`` instead of the recorded server if given)."""
    ops, skipped = _read(spool)
    session: Session | None = None
    run_id: str | None = None
    runs: list[str] = []
    done = 0
    for op in ops:
        if op["op"] == "target":
            session = _session(spool, uri, op)
            run_id = op.get("run_id")
            continue
        assert session is not None
        try:
            run_id = session.apply(op, run_id)
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(
                f"{spool}: operation {done + 1} ({op['op']}) failed against "
                f"{session.target.uri}: {_first(exc)}; the spool is kept, sync again once "
                "MLflow answers"
            ) from exc
        if run_id is not None and run_id not in runs:
            runs.append(run_id)
        done += 1
    os.replace(spool, spool.with_name(spool.name + ".synced"))
    return SyncResult(str(spool), done, tuple(runs), skipped)
