"""What ``cauce tune`` shows: a live table on a terminal (rich), plain lines otherwise.

Both are :class:`~cauce.tune.api.TuneConsole` objects, called from the tuner's thread only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from cauce.tune.api import StudyProgress, StudyResult, TrialInfo, TrialState, TuneConsole

__all__ = ["LiveConsole", "PlainConsole", "describe_params", "make_console"]

#: Finished trials the live table keeps below the running ones.
_RECENT = 8


def make_console(stream: IO[str] | None = None, *, live: bool | None = None) -> TuneConsole:
    """A live table when ``stream`` is a terminal and rich is installed, else plain lines."""
    stream = stream or sys.stdout
    if live is None:
        live = stream.isatty()
    if live:
        try:
            return LiveConsole(stream)
        except ImportError:
            pass
    return PlainConsole(stream)


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


class PlainConsole:
    """One line per change of a trial's state: for logs, pipes and CI."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._last: dict[int, tuple[str, str]] = {}

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def started(self, progress: StudyProgress, note: str) -> None:
        goal = "minimize" if progress.direction == "min" else "maximize"
        self._line(
            f"study {progress.study}: {goal} {progress.metric}, {progress.target} trials, "
            f"{progress.parallel} at a time; {progress.done} done already"
        )
        if note:
            self._line(f"study {progress.study}: {note}")

    def changed(self, trial: TrialInfo, progress: StudyProgress) -> None:
        key = (trial.state, trial.note if trial.state == TrialState.WAITING else "")
        if self._last.get(trial.number) == key:
            return
        self._last[trial.number] = key
        where = f"[{progress.done}/{progress.target}] trial {trial.number}"
        if trial.state == TrialState.WAITING:
            self._line(f"{where} waiting: {trial.note or 'for resources'}")
        elif trial.state == TrialState.RUNNING:
            self._line(f"{where} running: {describe_params(trial.params)} (job {trial.job_id})")
        elif trial.state == TrialState.PRUNED:
            self._line(f"{where} {trial.note}: {progress.metric} {fmt_value(trial.value)}")
        elif trial.state == TrialState.COMPLETE:
            best = progress.best
            tail = f"; best so far: trial {best.number}" if best is not None else ""
            self._line(
                f"{where} complete: {progress.metric} {fmt_value(trial.value)} in "
                f"{fmt_duration(trial, time.time())}{tail}"
            )
        elif trial.state == TrialState.FAILED:
            self._line(f"{where} failed: {first_line(trial.note)}")

    def tick(self, progress: StudyProgress) -> None:
        return None

    def finished(self, result: StudyResult) -> None:
        self._line(f"study {result.study} {result.status}: {summary(result)}")


class LiveConsole:
    """A table of the running trials and the last finished ones, redrawn in place."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self._progress: StudyProgress | None = None

    def started(self, progress: StudyProgress, note: str) -> None:
        self._progress = progress
        if note:
            self.console.print(f"study {progress.study}: {note}")
        self.live.update(self._render(progress))
        self.live.start()

    def changed(self, trial: TrialInfo, progress: StudyProgress) -> None:
        self.tick(progress)

    def tick(self, progress: StudyProgress) -> None:
        self._progress = progress
        self.live.update(self._render(progress))

    def finished(self, result: StudyResult) -> None:
        if self._progress is not None:
            final = StudyProgress(
                study=result.study,
                metric=result.metric,
                direction=result.direction,
                target=self._progress.target,
                parallel=self._progress.parallel,
                trials=result.trials,
                failures=self._progress.failures,
                max_failures=self._progress.max_failures,
            )
            self.live.update(self._render(final))
        self.live.stop()
        self.console.print(f"study {result.study} {result.status}: {summary(result)}")

    def close(self) -> None:
        """Give the terminal back, also when the study ended with an error."""
        if self.live.is_started:
            self.live.stop()

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
