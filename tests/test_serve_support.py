"""Helpers for the serving tests: synthetic model directories and a real `cauce serve` process.

(No tests here; the name keeps it beside the serve tests that import it.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

_LISTENING = re.compile(r"on (?P<scheme>https?)://(?P<host>[^ ]+):(?P<port>\d+) ")


def serve_env(base: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without CAUCE_SERVE_* from the caller's shell, one torch thread."""
    env = {k: v for k, v in base.items() if not k.startswith("CAUCE_SERVE_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


class ServerProcess:
    """``cauce serve MODEL_DIR --port 0 ARGS`` in a subprocess; ``url`` once it listens.

    Its stderr is read by a thread into ``lines`` (so the pipe never fills). ``stop()`` sends
    SIGTERM and waits; leaving the ``with`` block does the same.
    """

    def __init__(
        self,
        model_dir: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        ready: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self.lines: list[str] = []
        self._env = serve_env(os.environ) if env is None else {**env, "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "cauce", "-v", "serve", str(model_dir), "--port", "0", *args]
        self.proc = subprocess.Popen(
            argv,
            env=self._env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._listening = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout):
            self.stop()
            raise RuntimeError(f"cauce serve did not start: {self.log}")
        if ready:
            self.wait_ready(timeout)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match and not self._listening.is_set():
                self.url = f"{match['scheme']}://{match['host']}:{match['port']}"
                self._listening.set()
        self._listening.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cauce serve exited {self.proc.returncode}: {self.log}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"cauce serve not ready after {timeout} s: {self.log}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def make_models(folder: Path, kinds: Sequence[str] = ("flights",)) -> dict[str, Path]:
    """Save the synthetic models (flights-shaped; ``heavy`` is the slow one) under ``folder``."""
    from cauce.serve._synthetic import save_synthetic

    return {kind: save_synthetic(folder / kind, kind) for kind in kinds}
