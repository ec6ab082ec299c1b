"""What ``cauce tune`` shows, on the shared :class:`cauce._console.Console`: a live table of
the trials on a terminal (rich), one line per change of a trial's state otherwise.

A :class:`~cauce.tune.api.TuneConsole`, called from the tuner's thread only.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from cauce._console import Console
from cauce.tune.api import StudyProgress, StudyResult, TrialInfo, TrialState, TuneConsole

__all__ = ["StudyConsole", "cause_lines", "describe_params", "make_console"]

#: Finished trials the live table keeps below the running ones.
_RECENT = 8
#: Lines of a failed trial's cause shown below its first one (the log tail it quotes).
_CAUSE_LINES = 24


def make_console(stream: IO[str] | None = None, *, live: bool | None = None) -> TuneConsole:
    """A live table when ``stream`` is a terminal and rich is installed, else plain lines."""
    return StudyConsole(Console(stream or sys.stdout, live=live))


def fmt_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def describe_params(params: Mapping[str, Any]) -> str:
    parts = []
    for name, value in params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={shown}")
    return " ".join(parts)


def fmt_duration(trial: TrialInfo, now: float) -> str:
    if trial.started_at is None:
        return "-"
    seconds = (trial.ended_at or now) - trial.started_at
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def first_line(text: str, width: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def cause_lines(note: str, job_id: str | None = None, most: int = _CAUSE_LINES) -> list[str]:
    """A failed trial's cause as the console shows it: its first line, then up to ``most`` more
    (a root cause's quoted log: a traceback, or a hung task's stacks), indented 2 more."""
    lines = [line.rstrip() for line in note.strip().splitlines()]
    if not lines:
        return ["no cause recorded"]
    shown = [first_line(note), *(f"  {line}" for line in lines[1 : most + 1])]
    if len(lines) > most + 1:
        where = f": cauce show {job_id}" if job_id else ""
        shown.append(f"  ... {len(lines) - most - 1} more lines{where}")
    return shown


def summary(progress: StudyProgress | StudyResult, target: int | None = None) -> str:
    trials = progress.trials
    count = {state: sum(1 for t in trials if t.state == state) for state in ("complete", "pruned")}
    failed = sum(1 for t in trials if t.state == TrialState.FAILED)
    best = progress.best
    text = (
        f"{count['complete'] + count['pruned']}"
        + (f" of {target}" if target is not None else "")
        + f" trials done ({count['complete']} complete, {count['pruned']} pruned), "
        f"{failed} failed"
    )
    if best is not None:
        text += (
            f"; best: trial {best.number}, {progress.metric} {fmt_value(best.value)} "
            f"({describe_params(best.params)})"
        )
    return text


class StudyConsole:
    """Live: the running trials and the last finished ones, in a table redrawn in place.
    Lines: one per change of a trial's state, for logs, pipes and CI."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: dict[int, tuple[str, str]] = {}
        self._progress: StudyProgress | None = None

    def started(self, progress: StudyProgress, note: str) -> None:
        if not self.console.live:
            goal = "minimize" if progress.direction == "min" else "maximize"
            self.console.line(
                f"study {progress.study}: {goal} {progress.metric}, {progress.target} trials, "
                f"{progress.parallel} at a time; {progress.done} done already"
            )
        for line in note.splitlines():
            self.console.line(f"study {progress.study}: {line}")
        self.tick(progress)

    def changed(self, trial: TrialInfo, progress: StudyProgress) -> None:
        if self.console.live:
            self.tick(progress)
            return
        key = (trial.state, trial.note if trial.state == TrialState.WAITING else "")
        if self._last.get(trial.number) == key:
            return
        self._last[trial.number] = key
        where = f"[{progress.done}/{progress.target}] trial {trial.number}"
        if trial.state == TrialState.WAITING:
            self.console.line(f"{where} waiting: {trial.note or 'for resources'}")
        elif trial.state == TrialState.RUNNING:
            self.console.line(
                f"{where} running: {describe_params(trial.params)} (job {trial.job_id})"
            )
        elif trial.state == TrialState.PRUNED:
            self.console.line(f"{where} {trial.note}: {progress.metric} {fmt_value(trial.value)}")
        elif trial.state == TrialState.COMPLETE:
            best = progress.best
            tail = f"; best so far: trial {best.number}" if best is not None else ""
            self.console.line(
                f"{where} complete: {progress.metric} {fmt_value(trial.value)} in "
                f"{fmt_duration(trial, time.time())}{tail}"
            )
        elif trial.state == TrialState.FAILED:
            first, *rest = cause_lines(trial.note, trial.job_id)
            self.console.line(f"{where} failed: {first}")
            for line in rest:
                self.console.line(line)

    def tick(self, progress: StudyProgress) -> None:
        if self.console.live:
            self._progress = progress
            self.console.show(self._render(progress))

    def finished(self, result: StudyResult) -> None:
        if self._progress is not None:  # the table as the study ended
            self.tick(dataclasses.replace(self._progress, trials=result.trials))
        self.console.end()
        self.console.line(f"study {result.study} {result.status}: {summary(result)}")

    def close(self) -> None:
        """Give the terminal back, also when the study ended with an error."""
        self.console.close()

    def _render(self, progress: StudyProgress) -> Any:
        from rich.table import Table

        now = time.time()
        goal = "min" if progress.direction == "min" else "max"
        table = Table(
            title=f"study {progress.study}: {goal} {progress.metric}, "
            f"{progress.parallel} at a time",
            caption=summary(progress, progress.target),
            expand=False,
        )
        for column in ("trial", "state", "step", progress.metric, "time", "params", "note"):
            table.add_column(column, no_wrap=column != "note")
        active = [t for t in progress.trials if not t.finished and t.state != TrialState.QUEUED]
        shown = {t.number: t for t in [t for t in progress.trials if t.finished][-_RECENT:]}
        shown.update((t.number, t) for t in active)
        best = progress.best
        if best is not None:
            shown[best.number] = best  # the best stays in view
        styles = {"complete": "green", "pruned": "yellow", "failed": "red", "waiting": "dim"}
        for trial in sorted(shown.values(), key=lambda t: t.number):
            state = trial.state + (" *" if best is not None and trial is best else "")
            table.add_row(
                str(trial.number),
                state,
                "-" if trial.step is None else str(trial.step),
                fmt_value(trial.value),
                fmt_duration(trial, now),
                describe_params(trial.params),
                first_line(trial.note, 60),
                style=styles.get(trial.state),
            )
        return table
