"""Running the model server: one process, or a supervisor and N worker processes.

The listening socket is bound here, before anything else starts, so that ``--port 0`` works and
all workers share one socket. One worker: uvicorn runs the app in this process. Several: uvicorn's
supervisor starts them (``spawn``, each loads its own copy of the model), restarts one that dies,
and stops them all on SIGTERM or SIGINT. Workers also die with the supervisor
(``PR_SET_PDEATHSIG``), so no worker outlives it even when it is killed with SIGKILL.

SIGTERM drains: the server stops accepting connections, answers every request it has read
(waiting at most ``grace_s``), then exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from cauce.serve._app import ServeApp
from cauce.serve._spec import read_spec
from cauce.serve.api import ServeError, ServeSettings

__all__ = ["bind", "serve", "worker_init"]

log = logging.getLogger(__name__)

_SUPERVISOR = "CAUCE_SERVE_SUPERVISOR_PID"
_LOG_LEVEL = "CAUCE_SERVE_LOG_LEVEL"
_STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start: do not restart


def bind(host: str, port: int) -> socket.socket:
    """A bound, inheritable TCP socket (not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    import importlib.util

    fast = importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools")
    return {
        "loop": "uvloop" if fast else "asyncio",
        "http": "httptools" if fast else "h11",
        "lifespan": "on",
        "access_log": settings.access_log,
        "log_config": None,
        "timeout_graceful_shutdown": settings.grace_s,
        "server_header": False,
        "backlog": 2048,
    }


def serve(
    settings: ServeSettings, *, on_listening: Callable[[str, int], None] | None = None
) -> None:
    """Serve ``settings.model_dir`` until SIGTERM or SIGINT. Raises ServeError if it cannot."""
    try:
        import uvicorn  # noqa: F401  (the extra is there)
    except ModuleNotFoundError as exc:
        raise ServeError(f"cauce serve needs {exc.name}: pip install 'cauce[serve]'") from None
    read_spec(settings.model_dir)  # a bad model directory fails here, before any process starts
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    if on_listening is not None:
        on_listening(host, port)
    options = _uvicorn_options(settings)
    try:
        if settings.workers == 1:
            _serve_here(settings, sock, options)
        else:
            _serve_workers(settings, sock, options)
    finally:
        sock.close()


def _serve_here(settings: ServeSettings, sock: socket.socket, options: dict[str, Any]) -> None:
    import uvicorn

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def fatal(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal once drained; SIGTERM drained is a clean exit (0).
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
                captured.remove(sig)

    app = ServeApp(settings, on_fatal=fatal)
    server = Server(uvicorn.Config(app, **options))
    server.run(sockets=[sock])
    if failures:
        raise ServeError(f"cannot serve {settings.model_dir}: {failures[0]}") from failures[0]


def _serve_workers(settings: ServeSettings, sock: socket.socket, options: dict[str, Any]) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    metrics_dir = tempfile.mkdtemp(prefix="cauce-serve-metrics-")
    saved = dict(os.environ)
    os.environ.update(settings.to_env())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[_SUPERVISOR] = str(os.getpid())
    os.environ[_LOG_LEVEL] = str(logging.getLogger().getEffectiveLevel())
    try:
        config = uvicorn.Config(
            "cauce.serve._app:create_app", factory=True, workers=settings.workers, **options
        )
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(p.exitcode == _STARTUP_FAILURE for p in supervisor.processes):
        raise ServeError(
            f"cannot serve {settings.model_dir}: a worker could not load it (see above)"
        )


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the supervisor dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def worker_init() -> ServeApp:
    """Build the app inside a worker process started by :func:`serve`."""
    parent = os.environ.get(_SUPERVISOR)
    if parent:
        _die_with_parent(int(parent))
    if not logging.getLogger().handlers:  # a spawned worker: log like the CLI that started it
        level = int(os.environ.get(_LOG_LEVEL, str(logging.WARNING)))
        logging.basicConfig(
            level=level, format=f"%(levelname)s [{os.getpid()}] %(name)s: %(message)s"
        )

    # Loads in its startup: a worker takes connections only once its model is ready, and one
    # that cannot load it fails its startup, which stops the supervisor (no restart loop).
    return ServeApp(ServeSettings.from_env(), background=False)
