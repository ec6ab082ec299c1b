"""One MLflow run, fed by its owner and sent by a thread of its own.

The owner (the job's driver, a tuner, a pipeline) queues operations and never waits for the
network: the sender thread takes what is queued, merges consecutive batches (all the metrics
the driver read since the last send go in one ``log_batch``), and sends. The first failure
(the server is down, an HTTP error) is warned of once; from then on the tracker is offline and
every operation, the failed one first, is appended to the spool file (JSON lines) with the run
it belongs to, so that ``cauce mlflow sync`` replays it. A tracking outage never fails a job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cauce.spec import TrackingSpec
from cauce.tracking._client import SENDER_THREAD
from cauce.tracking.api import RunLink, Target, resolve_target

__all__ = ["Tracker", "open_tracker"]

logger = logging.getLogger(__name__)

_CLOSE = None
_NONE: dict[str, Any] = {}  # no operation held

#: Operations queued at most: past it (a slow server) they go to the spool at once, so that
#: the owner's memory does not grow with its report rate and it never waits.
MAX_QUEUED = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """A run of ``target`` named ``name``, created at once (asynchronously).

    Thread safety: the queuing methods may be called from any thread; ``close`` from the owner
    only, once. ``warn`` is called at most once per kind of trouble (outage, spool).
    """

    def __init__(
        self,
        target: Target,
        spool: Path,
        *,
        name: str,
        tags: Mapping[str, str],
        parent: str | None = None,
        reuse: tuple[str, str] | None = None,
        warn: Callable[[str], None],
        hint: str = "",
    ) -> None:
        self.target = target
        self.spool = spool
        self.run_id: str | None = None
        self.sent = 0
        self.failures = 0
        self.error = ""
        self.dropped = 0  # operations lost: the spool could not be written
        self.ended = False
        self._warn = warn
        self._warned: set[str] = set()
        self._spooled = False  # the spool was written by this tracker (its end checked)
        self._spool_lock = threading.Lock()
        self._spill_lock = threading.Lock()
        self._spilled = False  # a target line was spooled by the owner
        self._hint = hint
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_QUEUED)
        self._held: list[dict[str, Any] | None] = []  # taken from the queue, not yet sent
        self._held_lock = threading.Lock()
        self._created = threading.Event()
        create: dict[str, Any] = {"op": "create", "name": name, "tags": dict(tags)}
        create |= {"time": now_ms(), "parent": parent, "reuse": list(reuse) if reuse else None}
        self._create = create
        self._queue.put_nowait(create)
        self._thread = threading.Thread(target=self._main, name=SENDER_THREAD, daemon=True)
        self._thread.start()

    # --- queuing (any thread) ------------------------------------------------------------------

    def log(
        self,
        metrics: Iterable[tuple[str, float, int, int]] = (),
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> None:
        """Metrics as (key, value, timestamp in ms, step), params and tags: one batch."""
        op: dict[str, Any] = {"op": "batch", "metrics": [list(m) for m in metrics]}
        op["params"] = [[k, str(v)] for k, v in (params or {}).items()]
        op["tags"] = [[k, str(v)] for k, v in (tags or {}).items()]
        if op["metrics"] or op["params"] or op["tags"]:
            self._put(op)

    def artifacts(self, path: str, artifact_path: str | None = None) -> None:
        self._put({"op": "artifacts", "path": path, "artifact_path": artifact_path})

    def text(self, text: str, file: str) -> None:
        self._put({"op": "text", "text": text, "file": file})

    def register(self, name: str, artifact_path: str, tags: Mapping[str, object]) -> None:
        """A version of registered model ``name`` from this run's ``artifact_path``."""
        op = {"op": "register", "name": name, "artifact_path": artifact_path}
        self._put(op | {"tags": [[k, str(v)] for k, v in tags.items()]})

    def end(self, status: str) -> None:
        """``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.ended = True
        self._put({"op": "end", "status": status, "time": now_ms()})

    def _put(self, op: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(op)
        except queue.Full:  # the server is slow: to the spool, for a sync
            self._say(
                "full",
                f"warning: MLflow tracking at {self.target.uri} is slow ({MAX_QUEUED} "
                f"operations waiting); what does not fit is kept in {self.spool}{self._hint}",
            )
            self._spill([op])

    def _spill(self, ops: list[dict[str, Any]]) -> None:
        """``ops`` to the spool from the owner's thread, after a target line."""
        head = {"op": "target", "uri": self.target.uri, "experiment": self.target.experiment}
        with self._spill_lock:
            if not self._spilled:
                self._spilled = True
                self._append(head | {"run_id": self.run_id})
                if self.run_id is None:  # its creation is under way: the replay creates it
                    self._keep(self._create)
            for op in ops:
                self._keep(op)

    def wait_created(self, timeout: float = 10.0) -> str | None:
        """The run's id once created (None if it could not be: the server is down)."""
        self._created.wait(timeout)
        return self.run_id

    def close(self, timeout: float = 20.0) -> None:
        """Send what is queued (up to ``timeout`` seconds) and stop the sender thread; what is
        left then goes to the spool (the operation being sent is the sender's to finish). A run
        its owner did not end (it failed before it could) ends ``FAILED``."""
        if not self.ended:
            self.end("FAILED")
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(_CLOSE, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return
        self.error = self.error or f"still sending after {timeout:.0f} s"
        left: list[dict[str, Any]] = []
        with self._held_lock:
            left.extend(op for op in reversed(self._held) if op is not None)
            self._held.clear()
            while True:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is not None:
                    left.append(op)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_CLOSE)  # the sender stops once its operation is done
        self._say(
            "slow",
            f"warning: MLflow tracking at {self.target.uri} still busy after {timeout:.0f} s; "
            f"{len(left)} operations not sent are kept in {self.spool}{self._hint}",
        )
        if left:
            self._spill(left)

    # --- the sender thread ---------------------------------------------------------------------

    def _next(self) -> dict[str, Any] | None:
        """The next operation, consecutive batches merged into one."""
        with self._held_lock:
            op = self._held.pop() if self._held else _NONE
        if op is _NONE:
            op = self._queue.get()
        if op is None or op["op"] != "batch":
            return op
        merged: dict[str, list[Any]] = {key: list(op[key]) for key in ("metrics", "params", "tags")}
        while True:
            with self._held_lock:  # ``close`` may take what is left meanwhile
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    return {"op": "batch", **merged}
                if more is None or more["op"] != "batch":
                    self._held.append(more)
                    return {"op": "batch", **merged}
            for key in ("metrics", "params", "tags"):
                merged[key].extend(more[key])

    def _main(self) -> None:
        session = None
        try:
            while True:
                op = self._next()
                if op is None:
                    return
                if self.error:
                    self._keep(op)
                    continue
                try:
                    if session is None:
                        from cauce.tracking._client import Session

                        session = Session(self.target)
                    self.run_id = session.apply(op, self.run_id)
                    self.sent += 1
                except Exception as exc:  # any failure of the server or client: go offline
                    self._offline(exc)
                    if op is not self._create or not self._spilled:  # not kept already
                        self._keep(op)
                if op["op"] == "create":
                    self._created.set()
        finally:
            self._created.set()

    def _offline(self, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        self.error = first
        logger.info("MLflow tracking at %s failed", self.target.uri, exc_info=True)
        self._say(
            "offline",
            f"warning: MLflow tracking at {self.target.uri} failed ({first}); the job goes on, "
            f"what is not sent is kept in {self.spool}{self._hint}",
        )
        if self.run_id is None and self._spilled:  # the owner's segment creates the run
            return
        head = {"op": "target", "uri": self.target.uri, "experiment": self.target.experiment}
        self._append(head | {"run_id": self.run_id})

    def _keep(self, op: dict[str, Any]) -> None:
        self.failures += 1
        self._append(op)

    def _append(self, op: dict[str, Any]) -> None:
        """One line of the spool; a spool that cannot be written (disk full, folder gone)
        loses the operation, counted in ``dropped`` and warned of once."""
        line = json.dumps(op, separators=(",", ":")) + "\n"
        with self._spool_lock:
            try:
                self.spool.parent.mkdir(parents=True, exist_ok=True)
                with open(self.spool, "ab") as file:
                    if not self._spooled and file.tell() > 0:  # a line cut by a crash?
                        with open(self.spool, "rb") as old:
                            old.seek(-1, 2)
                            if old.read(1) != b"\n":
                                line = "\n" + line
                    file.write(line.encode("utf-8"))
                self._spooled = True
                return
            except OSError as exc:
                self.dropped += 1
                reason = str(exc)
        self._say(
            "spool",
            f"warning: MLflow spool {self.spool} cannot be written ({reason}); what is not "
            "sent to MLflow is lost",
        )

    def _say(self, kind: str, message: str) -> None:
        """``warn``, called at most once per ``kind`` of trouble (from any thread)."""
        with self._spool_lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        self._warn(message)


def open_tracker(
    tracking: TrackingSpec | None,
    environ: Mapping[str, str],
    default_experiment: str,
    spool: Path,
    *,
    parent: RunLink | None,
    name: str,
    tags: Mapping[str, str],
    warn: Callable[[str], None],
    hint: str,
    reuse: tuple[str, str] | None = None,
) -> Tracker | None:
    """A run under ``parent`` (in its target) or where ``tracking`` and ``environ`` say (see
    :func:`resolve_target`); None when tracking is off."""
    target = (
        parent.target
        if parent is not None
        else resolve_target(tracking, environ, default_experiment)
    )
    if target is None:
        return None
    return Tracker(
        target,
        spool,
        name=name,
        tags=tags,
        parent=parent.run_id if parent is not None else None,
        reuse=reuse,
        warn=warn,
        hint=hint,
    )
