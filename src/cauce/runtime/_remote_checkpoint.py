"""Checkpoints in an object store or another fsspec URI (``s3://bucket/run/checkpoints``).

Object stores have no rename: a step's folder is written file by file, and its ``meta.json``,
written last, is the commit marker. Only folders with a ``meta.json`` are checkpoints; a writer
killed mid-save leaves a folder without one, which ``load`` ignores and a later ``save`` removes.
Saving a step again (a restarted attempt) first removes that step's marker. Old steps lose their
marker first, then their files, and only after the new step is committed.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cauce._util.remote import url_to_fs

__all__ = ["latest", "read", "steps", "write"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{9,})$")
META = "meta.json"


def _display(fs: Any, path: str) -> str:
    return str(fs.unstrip_protocol(path))


def steps(uri: str) -> list[tuple[int, str]]:
    """The committed steps under ``uri`` (those with a ``meta.json``), sorted, as URIs."""
    fs, root = url_to_fs(uri)
    return [(n, _display(fs, p)) for n, p, done in _listing(fs, root) if done]


def latest(uri: str) -> int | None:
    found = steps(uri)
    return found[-1][0] if found else None


def _listing(fs: Any, root: str) -> list[tuple[int, str, bool]]:
    """Every step folder under ``root``: (step, path, committed)."""
    fs.invalidate_cache(root)
    try:
        entries = fs.find(root, withdirs=False, maxdepth=2)
    except FileNotFoundError:
        return []
    folders: dict[str, bool] = {}
    for entry in entries:
        rel = entry[len(root) :].strip("/")
        folder, _, name = rel.partition("/")
        if _NAME.match(folder):
            folders[folder] = folders.get(folder, False) or name == META
    found = []
    for folder, done in folders.items():
        match = _NAME.match(folder)
        assert match is not None
        found.append((int(match.group(1)), f"{root}/{folder}", done))
    return sorted(found)


def write(
    uri: str,
    step: int,
    keep: int,
    meta: dict[str, Any],
    write_state: Callable[[Path], tuple[str, Path]],
) -> str:
    """Write the checkpoint of ``step`` under ``uri``: its state file, then ``meta.json``."""
    fs, root = url_to_fs(uri)
    final = f"{root}/step-{step:09d}"
    for number, path, done in _listing(fs, root):
        if not done and number != step:
            _remove(fs, path)  # a writer killed mid-save left it; never loaded
    if fs.exists(f"{final}/{META}"):
        fs.rm_file(f"{final}/{META}")  # saved again: not complete until written again
    with tempfile.TemporaryDirectory(prefix="cauce-checkpoint-") as tmp:
        fmt, state_file = write_state(Path(tmp))
        fs.put_file(str(state_file), f"{final}/{state_file.name}")
    text = json.dumps({**meta, "format": fmt})
    fs.pipe_file(f"{final}/{META}", text.encode("utf-8"))  # the commit
    committed = [(n, p) for n, p, done in _listing(fs, root) if done]
    for _, old in committed[:-keep]:
        _remove(fs, old)
    return _display(fs, final)


def _remove(fs: Any, path: str) -> None:
    try:
        if fs.exists(f"{path}/{META}"):
            fs.rm_file(f"{path}/{META}")  # no longer a checkpoint, whatever happens next
        fs.rm(path, recursive=True)
    except (OSError, FileNotFoundError) as exc:
        log.warning("could not remove old checkpoint %s: %s", _display(fs, path), exc)


def read(uri: str, read_local: Callable[[Path], Any]) -> Any:
    """``read_local(folder)`` on a local copy of the checkpoint folder ``uri``."""
    fs, path = url_to_fs(uri)
    with tempfile.TemporaryDirectory(prefix="cauce-checkpoint-") as tmp:
        for entry in fs.find(path, withdirs=False):
            fs.get_file(entry, str(Path(tmp) / entry.rsplit("/", 1)[-1]))
        return read_local(Path(tmp))
