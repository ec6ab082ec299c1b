"""The driver's side of ``cauce.report``: read the tasks' progress files, keep the time of each
task's last sign of life (for hang detection) and turn lines into metric rows for the store."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cauce.history import MetricRow

__all__ = ["ProgressReader"]

logger = logging.getLogger(__name__)


class ProgressReader:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}

    def path(self, task_id: str) -> Path:
        return self.folder / f"{task_id}.jsonl"

    def poll(self, task_ids: list[str]) -> tuple[list[MetricRow], set[str]]:
        """New metric rows, and the tasks that wrote anything since the last poll."""
        rows: list[MetricRow] = []
        alive: set[str] = set()
        for task_id in task_ids:
            path = self.path(task_id)
            offset = self._offsets.get(task_id, 0)
            try:
                size = os.path.getsize(path)
                if size <= offset:
                    continue
                with open(path, "rb") as file:
                    file.seek(offset)
                    data = file.read(size - offset)
            except OSError:
                continue
            self._offsets[task_id] = offset + len(data)
            data = self._partial.pop(task_id, b"") + data
            *lines, rest = data.split(b"\n")
            if rest:
                self._partial[task_id] = rest
            if lines:
                alive.add(task_id)
            for line in lines:
                rows.extend(self._parse(task_id, line))
        return rows, alive

    def _parse(self, task_id: str, line: bytes) -> list[MetricRow]:
        try:
            record = json.loads(line)
        except ValueError:
            logger.debug("unreadable progress line of %s: %r", task_id, line[:200])
            return []
        metrics = record.get("m")
        if not isinstance(metrics, dict):
            return []
        return [
            MetricRow(
                task_id=task_id,
                attempt=int(record.get("a", 0)),
                step=int(record.get("s", 0)),
                ts=float(record.get("t", 0.0)),
                name=str(name),
                value=float(value),
            )
            for name, value in metrics.items()
        ]
