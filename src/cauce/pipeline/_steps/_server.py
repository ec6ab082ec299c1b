"""``cauce serve`` in a child process, for the serve step: started, waited for until it is
ready to answer, and stopped.

Readiness is ``cauce serve``'s own: ``--ready-file PATH`` makes it write PATH (JSON with
``url``, ``host``, ``port`` and ``pid``) once it answers, so ``--port 0`` needs no parsing of
its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from cauce.errors import CauceError

__all__ = ["server"]

_START_TIMEOUT = 120.0


class _Stderr:
    """Reads the child's stderr: keeps its tail; passes lines on once the server is ready."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.child = child
        self.tail: deque[str] = deque(maxlen=10)
        self.ready = threading.Event()  # set when ready: later lines are passed on
        self.thread = threading.Thread(target=self._read, name="serve-stderr", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.child.stderr is not None
        for line in self.child.stderr:
            if self.ready.is_set():
                sys.stderr.write(line)
                continue
            self.tail.append(line.rstrip())

    def wait(self, path: Path) -> str:
        """The server's URL once it answers; an error with its last lines if it exits first."""
        deadline = time.monotonic() + _START_TIMEOUT
        while not path.exists():
            if self.child.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise CauceError(f"cauce serve was not ready within {_START_TIMEOUT:.0f} s")
            time.sleep(0.05)
        if path.exists():
            self.ready.set()
            return str(json.loads(path.read_text(encoding="utf-8"))["url"])
        try:  # it exits, or exited
            code = self.child.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise CauceError(f"cauce serve was not ready within {_START_TIMEOUT:.0f} s") from None
        self.thread.join(timeout=5)
        tail = "\n".join(self.tail)
        raise CauceError(f"cauce serve exited ({code}) before it was ready:\n{tail}")


@contextlib.contextmanager
def server(model_dir: Path, host: str, port: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``cauce serve`` in a child process; yields it and its URL once it answers. Stopped with
    SIGTERM (it drains) when the block ends, then SIGKILL if it lingers. It leads its own
    process group, watched by a reaper: if this process is killed (even with SIGKILL), the
    server is stopped too."""
    from cauce.cluster import Reaper

    reaper = Reaper(grace=30.0)
    folder = tempfile.mkdtemp(prefix="cauce-serve-")
    reaper.scratch(folder)  # removed by the reaper if this process is killed
    try:
        ready_file = Path(folder) / "ready.json"
        argv = [sys.executable, "-m", "cauce", "serve", str(model_dir)]
        argv += ["--host", host, "--port", str(port), "--ready-file", str(ready_file)]
        child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
        reaper.watch(child.pid)
        err = _Stderr(child)
        try:
            yield child, err.wait(ready_file)
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
            err.thread.join(timeout=5)
            if child.stderr is not None and not err.thread.is_alive():
                child.stderr.close()  # read to its end: closed now, not when collected
            reaper.unwatch(child.pid)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        reaper.close()
