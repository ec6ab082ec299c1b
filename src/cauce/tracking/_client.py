"""The MLflow calls cauce makes, as operations: plain JSON-able dicts, so that one that could
not be sent is written to a spool file as it is and replayed later (``_sync``).

Operations (``op``): ``create`` (a run: experiment, name, tags, parent, start time), ``batch``
(metrics, params and tags, sent with ``log_batch`` in chunks within MLflow's limits),
``artifacts`` (a local folder), ``text`` (a small file), ``end`` (status, end time) and
``register`` (a model version of the run's artifact folder, with tags). mlflow is imported
here only, lazily: the launcher runs without it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from cauce.errors import TrackingError
from cauce.tracking.api import ADDED_ENV, MISSING, Target

__all__ = ["SENDER_THREAD", "Session", "load_mlflow", "unsupported_uri"]

#: The name of the trackers' sender threads.
SENDER_THREAD = "cauce-mlflow"

# MLflow's limits for one log_batch call, and for one value.
_MAX_METRICS = 1000
_MAX_PARAMS = 100
_MAX_TAGS = 100
PARAM_CHARS = 6000
TAG_CHARS = 8000

#: MLflow's HTTP client retries a refused connection 7 times with a doubling backoff (minutes);
#: a tracking outage must cost a job seconds. Set only where the user has not, and kept
#: from the tasks cauce starts (``ADDED_ENV``).
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # the run's URL on stdout, at each end
    "MLFLOW_CONFIGURE_LOGGING": "false",  # mlflow installs no log handlers of its own
}


class _QuietRetries(logging.Filter):
    """Drop urllib3's "Retrying ..." warnings of the tracker's own thread: an outage is warned
    of once, by the tracker, in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName == SENDER_THREAD and str(record.msg).startswith("Retrying"))


_quiet = _QuietRetries()


def set_defaults() -> None:
    """cauce's MLflow settings, where the user has none, in this process's environment."""
    for name, value in _ENV_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = ADDED_ENV[name] = value


def load_mlflow() -> Any:
    """The mlflow module; :class:`TrackingError` naming the extra when it is missing."""
    set_defaults()
    pool = logging.getLogger("urllib3.connectionpool")
    if _quiet not in pool.filters:
        pool.addFilter(_quiet)
    try:
        import mlflow
    except ImportError:
        raise TrackingError(MISSING) from None
    return mlflow


def unsupported_uri(exc: BaseException) -> bool:
    """True if ``exc`` is MLflow's refusal of a URI it has no store for: one class per kind of
    store (the registry's, the workspace's...), each ``Unsupported...URIException``."""
    name = type(exc).__name__
    return name.startswith("Unsupported") and name.endswith("URIException")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


class Session:
    """An MLflow client bound to one target, carrying out operations. Not thread-safe: one
    per thread. Errors are MLflow's or the HTTP client's own: the caller decides."""

    def __init__(self, target: Target) -> None:
        mlflow = load_mlflow()
        self.mlflow = mlflow
        self.target = target
        self.client = mlflow.MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
        self._experiment_id: str | None = None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            name = self.target.experiment
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self._experiment_id = str(self.client.create_experiment(name))
                except self.mlflow.exceptions.MlflowException:
                    found = self.client.get_experiment_by_name(name)  # made meanwhile
                    if found is None:
                        raise
            if found is not None:
                self._experiment_id = str(found.experiment_id)
        assert self._experiment_id is not None
        return self._experiment_id

    def apply(self, op: dict[str, Any], run_id: str | None) -> str | None:
        """Carry out ``op`` on ``run_id``; returns the run id (a new one for ``create``)."""
        kind = op["op"]
        if kind == "create":
            return self._create(op)
        if run_id is None:
            raise TrackingError(f"MLflow operation {kind!r} before its run was created")
        if kind == "batch":
            self._batch(run_id, op)
        elif kind == "artifacts":
            self.client.log_artifacts(run_id, op["path"], op.get("artifact_path"))
        elif kind == "text":
            self.client.log_text(run_id, op["text"], op["file"])
        elif kind == "end":
            self.client.set_terminated(run_id, op["status"], int(op["time"]))
        elif kind == "register":
            self._register(run_id, op)
        else:
            raise TrackingError(f"unknown MLflow operation {kind!r}")
        return run_id

    def _create(self, op: dict[str, Any]) -> str:
        tags = dict(op.get("tags") or {})
        if op.get("parent"):
            tags["mlflow.parentRunId"] = op["parent"]
        reuse = op.get("reuse")  # [tag, value]: continue the run that has it (a resumed study)
        if reuse:
            key, value = reuse
            found = self.client.search_runs(
                [self.experiment_id()], f"tags.`{key}` = '{value}'", max_results=1
            )
            if found:
                return str(found[0].info.run_id)
        run = self.client.create_run(
            self.experiment_id(), start_time=int(op["time"]), tags=tags, run_name=op.get("name")
        )
        return str(run.info.run_id)

    def _batch(self, run_id: str, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in op.get("metrics", ())]
        params = [Param(k, str(v)[:PARAM_CHARS]) for k, v in op.get("params", ())]
        tags = [RunTag(k, str(v)[:TAG_CHARS]) for k, v in op.get("tags", ())]
        for chunk in _chunks(params, _MAX_PARAMS):
            if chunk:
                self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tags, _MAX_TAGS):
            if chunk:
                self.client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(metrics, _MAX_METRICS):
            if chunk:
                self.client.log_batch(run_id, metrics=chunk)

    def _register(self, run_id: str, op: dict[str, Any]) -> None:
        name = op["name"]
        exceptions = self.mlflow.exceptions
        try:
            self.client.create_registered_model(name)
        except exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{op['artifact_path']}"
        self.client.create_model_version(
            name, source, run_id=run_id, tags={k: str(v)[:TAG_CHARS] for k, v in op["tags"]}
        )
