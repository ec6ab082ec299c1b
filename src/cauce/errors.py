"""The one exception tree of cauce.

Every error that cauce raises on purpose is a :class:`CauceError`. The CLI prints those as one
line ``error: ...`` and exits non-zero; anything else is a bug and gets a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CauceError",
    "ClusterError",
    "DataError",
    "GangFailed",
    "HistoryError",
    "PlacementError",
    "SpecError",
    "SpecErrors",
    "TrackingError",
]


_MAX_MESSAGE = 2000


class CauceError(Exception):
    """Base of every error cauce raises on purpose."""

    #: Exit code the CLI uses for this kind of error.
    exit_code: int = 1


class SpecError(CauceError):
    """A spec (YAML file or arguments) is invalid. Nothing was started.

    ``path`` is the dotted field path (``roles.worker.instances``), ``value`` the offending value,
    ``line`` the line of the file it is on (1-based; 0 when unknown).
    """

    exit_code = 2

    def __init__(
        self, path: str, message: str, *, value: object = None, source: str = "", line: int = 0
    ) -> None:
        self.path = path
        self.message = message
        self.value = value
        self.source = source
        self.line = line
        where = f"{source}:{line}: " if source and line else f"{source}: " if source else ""
        field = f"{path} " if path else ""
        text = f"{where}{field}{message}"
        # One line, of a readable length, whatever a spec's keys and values hold.
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        if len(text) > _MAX_MESSAGE:
            text = f"{text[: _MAX_MESSAGE - 3]}..."
        super().__init__(text)


class SpecErrors(SpecError):
    """Every problem found in one spec, each a :class:`SpecError`, in ``errors``; the message
    has one line each (the first :attr:`MAX_SHOWN`, then how many more). ``path``, ``value``,
    ``source`` and ``line`` are the first one's."""

    MAX_SHOWN = 20

    def __init__(self, errors: Sequence[SpecError]) -> None:
        flat: list[SpecError] = []
        for error in errors:
            flat.extend(error.errors if isinstance(error, SpecErrors) else [error])
        self.errors: tuple[SpecError, ...]
        if not flat:
            raise ValueError("SpecErrors needs at least one error")
        self.errors = tuple(flat)
        first = flat[0]
        self.path, self.message, self.value = first.path, first.message, first.value
        self.source, self.line = first.source, first.line
        lines = [str(error) for error in flat[: self.MAX_SHOWN]]
        if len(flat) > self.MAX_SHOWN:
            lines.append(f"... and {len(flat) - self.MAX_SHOWN} more problems in {first.source}")
        CauceError.__init__(self, "\n".join(lines))

    @staticmethod
    def raise_any(errors: Sequence[SpecError]) -> None:
        """Raise nothing for no error, the error for one, :class:`SpecErrors` for several."""
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise SpecErrors(errors)


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
