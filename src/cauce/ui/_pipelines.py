"""Pipelines as their state folders keep them (``$CAUCE_HOME/pipelines/NAME``): the steps of
the last run (``last_run.json``) with what each produced, and the models among their outputs.
Names in URLs are only ever compared with the folders found, never joined into a path."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Model", "Pipeline", "Step", "find_pipeline", "list_pipelines"]

_SPEC_FILE = "cauce-model.json"  # cauce.serve.SPEC_FILE, without importing serve's extras


@dataclass(frozen=True)
class Step:
    name: str
    kind: str
    needs: tuple[str, ...]
    status: str  # ran | skipped (cache hit) | failed | not run
    seconds: float | None
    finished_at: float | None  # of its last success
    result: dict[str, Any]


@dataclass(frozen=True)
class Model:
    step: str
    output: str
    folder: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class Pipeline:
    name: str
    folder: Path
    file: str
    finished_at: float | None
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def models(self) -> list[Model]:
        out = []
        for step in self.steps:
            outputs = step.result.get("outputs")
            if not isinstance(outputs, dict):
                continue
            for key, value in outputs.items():
                spec = _read_json(Path(str(value)) / _SPEC_FILE) if isinstance(value, str) else None
                if spec is not None:
                    out.append(Model(step.name, str(key), str(value), spec))
        return out

    def evaluations(self, folder: str) -> list[tuple[str, dict[str, Any]]]:
        """(step, report) of the evaluate steps that scored the model in ``folder``."""
        found = []
        for step in self.steps:
            path = (step.result.get("outputs") or {}).get("evaluation")
            report = _read_json(Path(path)) if isinstance(path, str) else None
            if report is not None and os.path.normpath(str(report.get("model", ""))) == (
                os.path.normpath(folder)
            ):
                found.append((step.name, report))
        return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _root(home: Path) -> Path:
    return home / "pipelines"


def list_pipelines(home: Path) -> list[str]:
    root = _root(home)
    try:
        return sorted(p.name for p in root.iterdir() if (p / "state").is_dir())
    except OSError:
        return []


def find_pipeline(home: Path, name: str) -> Pipeline | None:
    if name not in list_pipelines(home):
        return None
    folder = _root(home) / name
    records = {}
    for path in (folder / "state").glob("*.json"):
        raw = _read_json(path)
        if raw is not None:
            records[path.stem] = raw
    last = _read_json(folder / "last_run.json") or {}
    listed = last.get("steps") if isinstance(last.get("steps"), list) else None
    if listed is None:  # a pipeline run before last_run.json: its records, oldest first
        order = sorted(records, key=lambda n: float(records[n].get("finished_at", 0)))
        listed = [{"name": n, "kind": "", "needs": [], "status": "succeeded"} for n in order]
    steps = []
    for entry in listed:
        record = records.get(str(entry.get("name")), {})
        result = record.get("result")
        steps.append(
            Step(
                str(entry.get("name")),
                str(entry.get("kind") or ""),
                tuple(str(n) for n in entry.get("needs") or ()),
                str(entry.get("status") or ""),
                entry.get("seconds"),
                record.get("finished_at"),
                result if isinstance(result, dict) else {},
            )
        )
    return Pipeline(name, folder, str(last.get("file", "")), last.get("finished_at"), tuple(steps))
