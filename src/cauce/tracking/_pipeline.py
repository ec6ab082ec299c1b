"""A pipeline as one MLflow parent run: its job steps' runs (a study's, a training job's) hang
under it, and the train step's model goes up as the artifact ``model`` of the training job's
run (the cauce model folder, with an ``MLmodel`` file naming the ``cauce`` flavor) and as a
version of a registered model (the pipeline's name, or ``tracking.model``) whose tags carry its
lineage: ``cauce.dataset.content_hash``, ``cauce.study``, ``cauce.trial``, ``cauce.code_sha256``.

The parent run is created when a step first needs it: a pipeline whose steps are all up to date
leaves no empty run behind.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cauce.spec import TrackingSpec
from cauce.tracking._job import JobTracking
from cauce.tracking._sync import SPOOL_FILE
from cauce.tracking._tracker import Tracker
from cauce.tracking.api import RunLink, Target, resolve_target

__all__ = ["PipelineTracking", "lineage_tags", "open_pipeline_tracking"]


def lineage_tags(lineage: Mapping[str, Any]) -> dict[str, object]:
    """The tags of a model version from a model's ``lineage.pipeline``."""
    tags: dict[str, object] = {
        "cauce.pipeline": lineage.get("name", ""),
        "cauce.step": lineage.get("step", ""),
        "cauce.job_id": lineage.get("job_id", ""),
        "cauce.code_sha256": lineage.get("code_sha256", ""),
    }
    for step, upstream in (lineage.get("upstream") or {}).items():
        for key, value in upstream.items():
            tags[f"cauce.upstream.{step}.{key}"] = value
        if "content_hash" in upstream:
            tags["cauce.dataset.content_hash"] = upstream["content_hash"]
        if "study" in upstream:
            tags["cauce.study"] = upstream["study"]
            tags["cauce.trial"] = upstream.get("trial", "")
    return tags


def _mlmodel(version: str) -> str:
    created = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
    return (
        "artifact_path: model\n"
        "flavors:\n"
        "  cauce:\n"
        "    model_spec: cauce-model.json\n"
        f"    cauce_version: {version}\n"
        f"model_uuid: {uuid.uuid4().hex}\n"
        f"utc_time_created: '{created}'\n"
    )


class PipelineTracking:
    """The run of one pipeline run; from the pipeline's thread only."""

    def __init__(
        self, target: Target, folder: Path, name: str, model: str, warn: Callable[[str], None]
    ) -> None:
        self.target = target
        self.folder = folder
        self.name = name
        self.model = model
        self.warn = warn
        self._tracker: Tracker | None = None

    def link(self) -> RunLink:
        """The parent run for a step's runs, created on the first call."""
        if self._tracker is None:
            self._tracker = Tracker(
                self.target,
                self.folder / SPOOL_FILE,
                name=self.name,
                tags={"cauce.pipeline": self.name, "cauce.kind": "pipeline"},
                warn=self.warn,
                hint=f": cauce mlflow sync {self.folder / SPOOL_FILE}",
            )
        return RunLink(self.target, self._tracker.wait_created())

    def log_model(
        self, job: JobTracking, model_dir: str, lineage: Mapping[str, Any], version: str
    ) -> None:
        """Upload the model folder to ``job``'s run and register a version of it."""
        job.tracker.artifacts(model_dir, "model")
        job.tracker.text(_mlmodel(version), "model/MLmodel")
        job.tracker.register(self.model, "model", lineage_tags(lineage))

    def close(self, ok: bool) -> None:
        if self._tracker is not None:
            self._tracker.end("FINISHED" if ok else "FAILED")
            self._tracker.close()


def open_pipeline_tracking(
    tracking: TrackingSpec | None,
    environ: Mapping[str, str],
    folder: Path,
    name: str,
    *,
    warn: Callable[[str], None],
) -> PipelineTracking | None:
    target = resolve_target(tracking, environ, name)
    if target is None:
        return None
    model = (tracking.model if tracking is not None else None) or name
    return PipelineTracking(target, folder, name, model, warn)
