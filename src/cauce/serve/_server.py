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

import logging
import os
import shutil
import signal
import socket
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cauce._util.net import is_loopback
from cauce.serve._app import ServeApp
from cauce.serve._ready import ReadyFile
from cauce.serve._spec import read_spec
from cauce.serve._worker import FACTORY, LOG_LEVEL_ENV, SUPERVISOR_ENV
from cauce.serve.api import ServeError, ServeSettings, SettingsError

__all__ = ["bind", "check_exposure", "serve"]

log = logging.getLogger(__name__)

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


class _EncryptedKey(Exception):
    """The TLS key asks for a pass phrase (never prompted for: a server has no one to ask)."""


def _no_pass_phrase() -> str:
    raise _EncryptedKey


def check_exposure(settings: ServeSettings) -> None:
    """Refuse what would serve other machines without authentication, and files that will not
    do (TLS, the ready file), before anything starts."""
    if not (settings.token or settings.insecure or is_loopback(settings.host)):
        raise SettingsError(
            f"refusing to serve on {settings.host}, reachable from other machines, without a "
            "token: set --token-file FILE or $CAUCE_SERVE_TOKEN (clients send Authorization: "
            "Bearer TOKEN), or pass --insecure to serve without authentication"
        )
    if settings.tls_cert:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                settings.tls_cert, settings.tls_key, password=_no_pass_phrase
            )
        except _EncryptedKey:
            raise SettingsError(
                f"--tls-key {settings.tls_key or settings.tls_cert}: the key is encrypted: give "
                "an unencrypted key (openssl pkey -in KEY -out PLAIN)"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"cannot use --tls-cert {settings.tls_cert} with --tls-key {settings.tls_key}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    if settings.ready_file and not Path(settings.ready_file).parent.is_dir():
        raise SettingsError(
            f"--ready-file {settings.ready_file}: its folder does not exist; create it first"
        )
    if settings.ready_file and Path(settings.ready_file).is_dir():
        raise SettingsError(
            f"--ready-file {settings.ready_file} is a folder: give the path of a file to write"
        )


def _check_device(device: str) -> None:
    """Refuse a CUDA device that torch does not see here, before the socket is bound (torch is
    imported only for a CUDA device: a CPU server's supervisor does without it)."""
    if not device.startswith("cuda"):
        return
    import torch

    number = device.partition(":")[2] or "0"
    if not number.isdigit():
        raise SettingsError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(number)
    if index >= count:
        seen = f"sees {count} CUDA device(s)" if count else "sees no CUDA device"
        raise SettingsError(f"--device {device}: torch {seen} here; give --device cpu")


def _uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    import importlib.util

    from cauce.serve._protocol import PROTOCOL

    fast = importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools")
    tls = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
    return {
        "loop": "uvloop" if fast else "asyncio",
        # h11 (without the extra's httptools) has the size limit, not the head deadline
        "http": PROTOCOL if fast else "h11",
        "lifespan": "on",
        "access_log": settings.access_log,
        "log_config": None,
        "timeout_graceful_shutdown": settings.grace_s,
        "server_header": False,
        "backlog": 2048,
        "max_header_bytes": settings.max_header_bytes,
        "header_timeout_s": settings.header_timeout_s,
        **(tls if settings.tls_cert else {}),
    }


def serve(
    settings: ServeSettings, *, on_listening: Callable[[str, int], None] | None = None
) -> None:
    """Serve ``settings.model_dir`` until SIGTERM or SIGINT. Raises ServeError if it cannot."""
    try:
        import uvicorn  # noqa: F401  (the extra is there)
    except ModuleNotFoundError as exc:
        raise ServeError(f"cauce serve needs {exc.name}: pip install 'cauce[serve]'") from None
    check_exposure(settings)
    read_spec(settings.model_dir)  # a bad model directory fails here, before any process starts
    _check_device(settings.device)
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    if on_listening is not None:
        on_listening(host, port)
    options = _uvicorn_options(settings)
    ready = None
    if settings.ready_file:
        ready = ReadyFile(settings.ready_file, scheme=settings.scheme, host=host, port=port)
        ready.start()
    try:
        if settings.workers == 1:
            _serve_here(settings, sock, options)
        else:
            _serve_workers(settings, sock, options)
    finally:
        if ready is not None:
            ready.close()
        sock.close()


def _serve_here(settings: ServeSettings, sock: socket.socket, options: dict[str, Any]) -> None:
    import uvicorn

    from cauce.serve._protocol import ServeConfig

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
    server = Server(ServeConfig(app, **options))
    server.run(sockets=[sock])
    if failures:
        raise ServeError(f"cannot serve {settings.model_dir}: {failures[0]}") from failures[0]


def _serve_workers(settings: ServeSettings, sock: socket.socket, options: dict[str, Any]) -> None:
    from uvicorn.supervisors import Multiprocess

    from cauce.serve._protocol import ServeConfig

    metrics_dir = tempfile.mkdtemp(prefix="cauce-serve-metrics-")
    saved = dict(os.environ)
    os.environ.update(settings.to_env())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    os.environ[LOG_LEVEL_ENV] = str(logging.getLogger().getEffectiveLevel())
    try:
        config = ServeConfig(FACTORY, factory=True, workers=settings.workers, **options)
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
