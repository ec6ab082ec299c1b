"""The one exception tree of cauce.

Every error that cauce raises on purpose is a :class:`CauceError`. The CLI prints those as one
line ``error: ...`` and exits non-zero; anything else is a bug and gets a traceback.
"""

from __future__ import annotations

__all__ = [
    "CauceError",
    "ClusterError",
    "DataError",
    "GangFailed",
    "HistoryError",
    "PlacementError",
    "SpecError",
    "TrackingError",
]


_MAX_MESSAGE = 2000


class CauceError(Exception):
    """Base of every error cauce raises on purpose."""

    #: Exit code the CLI uses for this kind of error.
    exit_code: int = 1


class SpecError(CauceError):
    """A spec (YAML file or arguments) is invalid. Nothing was started.

    ``path`` is the dotted field path (``roles.worker.instances``), ``value`` the offending value.
    """

    exit_code = 2

    def __init__(self, path: str, message: str, *, value: object = None, source: str = "") -> None:
        self.path = path
        self.value = value
        self.source = source
        where = f"{source}: " if source else ""
        field = f"{path} " if path else ""
        text = f"{where}{field}{message}"
        # One line, of a readable length, whatever a spec's keys and values hold.
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        if len(text) > _MAX_MESSAGE:
            text = f"{text[: _MAX_MESSAGE - 3]}..."
        super().__init__(text)


class ClusterError(CauceError):
    """A cluster backend could not be used (missing extra, unreachable master, ...)."""


class PlacementError(ClusterError):
    """A gang can never be placed on this cluster, whatever else finishes."""

    exit_code = 2


class HistoryError(CauceError):
    """The history store could not be read or written, or an id is unknown."""


class DataError(CauceError):
    """A dataset cannot be prepared or read: missing or corrupt file, bad schema, empty split.

    The message names the file (or dataset) and the problem. ``path`` is that file or dataset.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class GangFailed(CauceError):
    """A gang ended without success.

    ``root_cause`` is the one-paragraph explanation (first failed task, exit code or signal,
    how long it ran, the tail of its log); ``job_id`` names the job in the history store.
    """

    def __init__(self, job_id: str, root_cause: str, *, status: str = "failed") -> None:
        self.job_id = job_id
        self.root_cause = root_cause
        self.status = status
        super().__init__(f"job {job_id} {status}: {root_cause}")


class TrackingError(CauceError):
    """MLflow tracking or its registry cannot be used as asked: the client is not installed,
    a ``models:/`` URI names no model version, a spool cannot be replayed. A tracking server
    that fails during a job is never this error: the job goes on (see ``cauce.tracking``)."""
