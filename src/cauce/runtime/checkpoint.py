"""``cauce.checkpoint``: atomic save and load of training state; a restarted gang resumes.

    state = cauce.checkpoint.load()            # None on a fresh start
    start = state.step + 1 if state else 0
    ...
    cauce.checkpoint.save({"model": model.state_dict(), ...}, step=epoch)

A checkpoint is a folder ``step-000000012`` in the job's checkpoint folder (the same for every
attempt of a job, so a restart finds it). It is written under a temporary name, synced, then
renamed: a crash mid-write leaves no folder that ``load`` would take for a checkpoint. Only rank
0 writes, unless ``all_ranks=True``; the last ``keep`` are kept. ``save(..., background=True)``
writes on a thread and returns at once (``cauce.checkpoint.wait()`` waits for it; see
``_background``).

The checkpoint folder may be a URI (``CAUCE_CHECKPOINT_DIR=s3://bucket/job/checkpoints``, or
``directory=``), for jobs whose ranks run on several hosts: there a step's ``meta.json``, written
after its state, marks it complete (object stores have no rename; see ``_remote_checkpoint``).

Format: ``torch.save`` when torch is imported by the caller (loaded with ``weights_only=True`` by
default, so a checkpoint cannot run code), else ``pickle``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import logging
import os
import pickle
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cauce._util.files import swap_dir
from cauce._util.remote import is_uri
from cauce.errors import CauceError
from cauce.runtime import _remote_checkpoint as remote
from cauce.runtime._background import WRITER
from cauce.runtime._context import context

__all__ = ["Checkpoint", "CheckpointError", "latest_step", "load", "save", "wait"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{9,})$")


class CheckpointError(CauceError):
    """A checkpoint could not be written or read."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    state: Any
    path: Path | str  # a URI for checkpoints in an object store
    meta: dict[str, Any]


def _dir(directory: str | os.PathLike[str] | None) -> Path | str:
    """The checkpoint folder: ``directory``, else the job's; a URI stays a string."""
    if directory is None:
        directory = os.environ.get("CAUCE_CHECKPOINT_DIR") or context().checkpoint_dir
    return directory if is_uri(directory) else Path(directory)  # type: ignore[return-value]


def _sub(root: Path | str, name: str) -> Path | str:
    return f"{root.rstrip('/')}/{name}" if isinstance(root, str) else root / name


def _found(root: Path | str) -> list[tuple[int, Path | str]]:
    return list(remote.steps(root) if isinstance(root, str) else _complete(root))


def _complete(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _NAME.match(child.name)
        if match and (child / "meta.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _remove_stale(root: Path) -> None:
    """Remove what writers killed mid-save left behind (never loaded, only wasting space)."""
    for child in root.iterdir():
        if not child.name.startswith((".tmp-", ".old-")):
            continue
        parts = child.name.split("-")
        pid = parts[-2] if child.name.startswith(".tmp-") else parts[-1]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue  # being written right now (by this process or a rank saving all_ranks)
        shutil.rmtree(child, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _disk_full(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT error behind ``exc``, if any (torch wraps it in a RuntimeError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _size(folder: Path) -> int:
    """Bytes in the files of ``folder`` (0 when it is gone)."""
    total = 0
    with contextlib.suppress(OSError):
        for child in folder.iterdir():
            with contextlib.suppress(OSError):
                total += child.stat().st_size
    return total


@contextlib.contextmanager
def _serialising() -> Iterator[None]:
    """A state that pickle (or torch.save) refuses is the caller's mistake: say so, and how."""
    try:
        yield
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"the checkpoint's state cannot be serialised ({type(exc).__name__}: {exc}); save "
            "plain data: dicts and lists of numbers, strings, NumPy arrays, tensors, state_dict()s"
        ) from exc


def _write_state(state: Any, folder: Path) -> tuple[str, Path]:
    if "torch" in sys.modules:
        import torch

        path = folder / "state.pt"
        with open(path, "wb") as file, _serialising():  # closed even when the disk fills
            torch.save(state, file)
        return "torch", path
    path = folder / "state.pkl"
    with open(path, "wb") as file, _serialising():
        pickle.dump(state, file, protocol=pickle.HIGHEST_PROTOCOL)
    return "pickle", path


def _serialize(state: Any) -> tuple[str, memoryview]:
    """``(format, bytes)`` of ``state``, as :func:`_write_state` would write them."""
    if "torch" in sys.modules:
        import torch

        buffer = io.BytesIO()
        with _serialising():
            torch.save(state, buffer)
        return "torch", buffer.getbuffer()
    with _serialising():
        return "pickle", memoryview(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


def _write_bytes(fmt: str, data: memoryview, folder: Path) -> tuple[str, Path]:
    path = folder / ("state.pt" if fmt == "torch" else "state.pkl")
    with open(path, "wb") as file:
        file.write(data)
    return fmt, path


def latest_step(directory: str | os.PathLike[str] | None = None) -> int | None:
    WRITER.join()  # a background write of this process counts once it is complete
    found = _found(_dir(directory))
    return found[-1][0] if found else None


def save(
    state: Any,
    step: int,
    *,
    keep: int = 3,
    all_ranks: bool = False,
    directory: str | os.PathLike[str] | None = None,
    background: bool = False,
) -> Path | str | None:
    """Save ``state`` as the checkpoint of ``step``; returns its folder, a URI for one in an
    object store (None on other ranks).

    ``background=True`` serialises ``state`` here (a snapshot: change it as you like once this
    returns) and writes it on a thread, with the same guarantees; it returns at once, with the
    folder the checkpoint will be in. One write is in flight at a time: the next ``save`` waits
    for it, and raises its error if it failed, as :func:`wait` does. The interpreter waits for
    it at exit.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint step must be an int >= 0, got {step!r}")
    if keep < 1:
        raise CheckpointError(f"checkpoint keep must be >= 1, got {keep!r}")
    WRITER.wait()  # in order; a failed background write is raised here
    ctx = context()
    if not all_ranks and not ctx.is_chief:
        return None
    root = _dir(directory)
    if all_ranks:
        root = _sub(root, f"rank-{ctx.rank}")
    meta = _meta(step)
    write: Callable[[Path], tuple[str, Path]]
    if background:
        fmt, data = _serialize(state)
        write = functools.partial(_write_bytes, fmt, data)
    else:
        write = functools.partial(_write_state, state)
    final = _sub(root, f"step-{step:09d}")
    if isinstance(root, str):
        job: Callable[[], Path | str] = functools.partial(
            _save_remote, write, step, root, keep, meta
        )
    else:
        job = functools.partial(_save_local, write, root, keep, meta, root / f"step-{step:09d}")
    if not background:
        return job()
    WRITER.submit(job, str(final))
    return final


def wait() -> None:
    """Wait until this process's background checkpoint write, if any, is complete; raise the
    :class:`CheckpointError` of one that failed (each error once)."""
    WRITER.wait()


def _save_local(
    write: Callable[[Path], tuple[str, Path]],
    root: Path,
    keep: int,
    meta: dict[str, Any],
    final: Path,
) -> Path:
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        tmp.mkdir()
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {final}: {exc}") from exc
    try:
        fmt, _ = write(tmp)
        (tmp / "meta.json").write_text(json.dumps({**meta, "format": fmt}), encoding="utf-8")
        swap_dir(tmp, final)  # the same step may be saved again, by a restarted attempt
    except BaseException as exc:
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        full = _disk_full(exc)
        if full is not None:
            raise CheckpointError(
                f"cannot write checkpoint {final}: {full.strerror} (ENOSPC): it needed more "
                f"than the {written:,} bytes written before the disk was full "
                f"({shutil.disk_usage(root).free:,} bytes free now); free space there or save "
                "elsewhere (directory=...)"
            ) from exc
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write checkpoint {final}: {exc}") from exc
        raise
    for _, old_path in _complete(root)[:-keep]:
        shutil.rmtree(old_path, ignore_errors=True)
    return final


def _meta(step: int) -> dict[str, Any]:
    ctx = context()
    return {
        "step": step,
        "time": time.time(),
        "job_id": ctx.job_id,
        "attempt": ctx.attempt,
        "rank": ctx.rank,
    }


def _save_remote(
    write: Callable[[Path], tuple[str, Path]], step: int, root: str, keep: int, meta: dict[str, Any]
) -> str:
    try:
        return remote.write(root, step, keep, meta, write)
    except OSError as exc:  # the store refused, or could not be reached
        raise CheckpointError(f"cannot write checkpoint of step {step} to {root}: {exc}") from exc


def load(
    *,
    step: int | None = None,
    directory: str | os.PathLike[str] | None = None,
    weights_only: bool = True,
    map_location: Any = "cpu",
    rank: int | None = None,
) -> Checkpoint | None:
    """The latest complete checkpoint that loads (or the one of ``step``), or None if there is
    none.

    A checkpoint that cannot be read (a file truncated or corrupted after it was written, by a
    full disk or a broken copy) is skipped with a warning naming its folder, and the one before it
    is tried. :class:`CheckpointError` is raised only when checkpoints exist and none loads, or
    when the checkpoint of ``step`` was asked for and it cannot be read.
    """
    WRITER.join()  # a background write of this process counts once it is complete
    root = _dir(directory)
    if rank is not None:
        root = _sub(root, f"rank-{rank}")
    found = _found(root)

    def read(number: int, path: Path | str) -> Checkpoint:
        if isinstance(path, Path):
            return _read(number, path, weights_only=weights_only, map_location=map_location)
        try:
            copy = remote.read(
                path,
                lambda folder: _read(
                    number, folder, weights_only=weights_only, map_location=map_location
                ),
            )
        except CheckpointError as exc:  # it names the local copy: name the checkpoint
            cause = exc.__cause__ or exc
            raise CheckpointError(
                f"checkpoint {path} cannot be read: {type(cause).__name__}: {cause}"
            ) from cause
        except OSError as exc:
            raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
        return Checkpoint(copy.step, copy.state, path, copy.meta)

    if step is not None:
        found = [(s, p) for s, p in found if s == step]
        if not found:
            raise CheckpointError(f"no checkpoint of step {step} in {root}")
        return read(*found[0])
    failures: list[CheckpointError] = []
    for number, path in reversed(found):
        try:
            return read(number, path)
        except CheckpointError as exc:
            logger.warning("skipping checkpoint that cannot be read: %s", exc)
            failures.append(exc)
    if failures:
        raise CheckpointError(
            f"none of the {len(failures)} checkpoints in {root} can be read; the latest: "
            f"{failures[0]}"
        ) from failures[0]
    return None


def _read(number: int, path: Path, *, weights_only: bool, map_location: Any) -> Checkpoint:
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") == "torch":
            import torch

            state = torch.load(
                path / "state.pt", map_location=map_location, weights_only=weights_only
            )
        else:
            with open(path / "state.pkl", "rb") as file:
                state = pickle.load(file)
    except ImportError:
        raise
    except (
        Exception
    ) as exc:  # the framework's own loader raises what it likes (torch: RuntimeError)
        raise CheckpointError(
            f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}"
        ) from exc
    return Checkpoint(number, state, path, meta)
