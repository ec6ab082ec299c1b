"""The app of a worker process started by ``cauce serve --workers N``.

uvicorn's supervisor spawns each worker, which imports :func:`create_app` by name and builds
its app from the ``CAUCE_SERVE_*`` variables that :mod:`cauce.serve._server` set.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys

from cauce.serve._app import ServeApp
from cauce.serve.api import ServeSettings

__all__ = ["FACTORY", "LOG_LEVEL_ENV", "SUPERVISOR_ENV", "create_app"]

#: What uvicorn imports in each worker.
FACTORY = "cauce.serve._worker:create_app"
SUPERVISOR_ENV = "CAUCE_SERVE_SUPERVISOR_PID"
LOG_LEVEL_ENV = "CAUCE_SERVE_LOG_LEVEL"


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the supervisor dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def create_app() -> ServeApp:
    """Build the app inside a worker process (``cauce serve --workers``)."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if parent:
        _die_with_parent(int(parent))
    if not logging.getLogger().handlers:  # a spawned worker: log like the CLI that started it
        level = int(os.environ.get(LOG_LEVEL_ENV, str(logging.WARNING)))
        logging.basicConfig(
            level=level, format=f"%(levelname)s [{os.getpid()}] %(name)s: %(message)s"
        )

    # Loads in its startup: a worker takes connections only once its model is ready, and one
    # that cannot load it fails its startup, which stops the supervisor (no restart loop).
    return ServeApp(ServeSettings.from_env(), background=False)
