"""A real MLflow tracking server on 127.0.0.1 (SQLite backend store, local artifact folder
served through the server): the session fixture ``mlflow_server``, and :class:`MlflowServer`
for tests that stop and restart one of their own on the same store."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import SESSION_GROUPS

HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None
needs_mlflow = pytest.mark.skipif(not HAVE_MLFLOW, reason="needs mlflow (pip install mlflow)")


class MlflowServer:
    """``mlflow server`` on ``folder`` (its store and artifacts), at ``port`` (free if 0)."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        from cauce.cluster import free_ports

        self.folder = folder
        self.port = port or free_ports(1)[0]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        program = str(Path(sys.executable).parent / "mlflow")
        argv = [program, "server", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"]
        argv += ["--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"]
        with open(self.folder / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, start_new_session=True, cwd=self.folder
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except urllib.error.HTTPError as exc:  # not ready yet: drop its connection now
                exc.close()
                time.sleep(0.3)
            except OSError:
                time.sleep(0.3)
        log_text = (self.folder / "server.log").read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"mlflow server did not start on {self.uri}:\n{log_text}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM to the server's process group (it and its uvicorn workers), then SIGKILL;
        ``kill``: SIGKILL at once (a crash)."""
        if self.proc is None:
            return
        for sig in (signal.SIGKILL,) if kill else (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # its workers, if the parent went first
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One tracking server for the session (started on first use)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    assert server.proc is not None
    group = server.proc.pid  # its own session: the server and its workers
    SESSION_GROUPS.add(group)
    try:
        yield server
    finally:
        server.stop()
        SESSION_GROUPS.discard(group)
