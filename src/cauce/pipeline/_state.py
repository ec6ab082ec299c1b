"""What a pipeline remembers between runs: per step, the key of its inputs and its result.

``$CAUCE_HOME/pipelines/NAME/state/STEP.json``, replaced atomically when a step succeeds (a
step that fails or is killed leaves the previous record, so the next run redoes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cauce._util.files import atomic_write_text
from cauce._util.locks import FileLock, read_holder_pid
from cauce.errors import CauceError

__all__ = ["StateStore", "StepRecord", "digest", "hash_files"]


def digest(value: object) -> str:
    """SHA-256 of a JSON value, keys sorted."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def hash_files(paths: list[Path], base: Path) -> str:
    """SHA-256 over the names (relative to ``base``) and bytes of files, in name order."""
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: str(p.relative_to(base))):
        h.update(str(path.relative_to(base)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class StepRecord:
    key: str
    result: Mapping[str, Any]
    hash: str
    finished_at: float
    seconds: float


class StateStore:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.folder = home / "state"

    def get(self, step: str) -> StepRecord | None:
        path = self.folder / f"{step}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return StepRecord(
                raw["key"], raw["result"], raw["hash"], raw["finished_at"], raw["seconds"]
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: as if the step never ran; it runs again

    def put(self, step: str, key: str, result: Mapping[str, Any], seconds: float) -> StepRecord:
        record = StepRecord(key, result, digest(result), time.time(), seconds)
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(record.__dict__, indent=2, sort_keys=True, default=str)
        atomic_write_text(self.folder / f"{step}.json", data + "\n")
        return record

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """One run of a pipeline at a time (on this host, with this ``$CAUCE_HOME``)."""
        self.home.mkdir(parents=True, exist_ok=True)
        lock = FileLock.try_acquire(self.home / "lock", write_pid=True)
        if lock is None:
            holder = read_holder_pid(self.home / "lock") or "another process"
            raise CauceError(
                f"pipeline {name} is already running (pid {holder}); wait for it, or stop it first"
            )
        with lock:
            yield
