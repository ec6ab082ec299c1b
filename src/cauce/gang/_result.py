"""How a job ended: :class:`JobResult`, with its typed failure, and the one rendering of a
failure as the root cause people read (console, history, ``GangFailed``)."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from cauce.gang._logtail import log_tail
from cauce.gang._machine import Failure
from cauce.history import JobStatus

__all__ = ["JobResult", "describe_exit", "render_root_cause"]


@dataclass(frozen=True)
class JobResult:
    """``status`` is succeeded, failed or killed. ``failure`` is the task failure that ended
    the job (None when it succeeded, or ended by a timeout or an interrupt); ``root_cause`` is
    the text people read: the failure rendered with the tail of its log, or why it ended."""

    job_id: str
    status: JobStatus
    root_cause: str
    attempts: int
    restarts: int
    run_dir: str
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.status == JobStatus.SUCCEEDED


#: what a shell means by these exit codes
_SHELL_EXITS = {126: "command not executable", 127: "command not found"}


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


#: how a hung task is named, and what the OS said of its processes (see ``Failure.state``)
_HUNG = {
    "T": ("was stopped first", "process state T, as after SIGSTOP; "),
    "D": ("hung first", "a process stuck in uninterruptible sleep, state D; "),
    "": ("hung first", ""),
}


def _cpu(failure: Failure) -> str:
    if failure.busy is None or failure.state == "T":
        return ""
    return ", still using CPU" if failure.busy else ", using no CPU"


_THREAD = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$")
#: how far back in a hung task's log its stacks are looked for (a torch process has many threads)
_STACK_LINES = 400


def _teardown_hang(lines: list[str]) -> bool:
    """Whether the last stacks a task printed (``faulthandler``'s format, as a warm task prints
    them on SIGUSR2) show PyTorch's DDP teardown hang (docs/job-spec.md): a thread at the top
    level of its script, its function returned (``in <module>`` as its innermost frame), beside
    a native thread with no Python frame, each waiting for the other."""
    tops: list[str] = []
    frame_next = False
    for line in lines:
        if _THREAD.match(line.strip()):
            if frame_next:  # a thread with no frame line at all
                tops.append("")
            frame_next = True
        elif frame_next and line.strip():
            tops.append(line.strip())
            frame_next = False
    return any(t.endswith(" in <module>") for t in tops) and "<no Python frame>" in tops


def render_root_cause(
    failure: Failure, log_path: str, hang_timeout: float | None, *, permanent: bool = False
) -> str:
    """``worker-1 failed first (exit 3 after 1.2 s, attempt 1); last lines of its log ...``;
    ``permanent``: its exit code is one that is never restarted (``restart.never_on``)."""
    tail = log_tail(log_path)
    if failure.returncode is None:
        verb, state = _HUNG.get(failure.state, _HUNG[""])
        head = (
            f"{failure.task_id} {verb} ({state}no report or heartbeat "
            f"for {failure.hung_for or 0:.0f} s, hang_timeout {hang_timeout or 0:g} s, "
            f"after {failure.runtime:.1f} s, attempt {failure.attempt + 1}{_cpu(failure)})"
        )
        if _teardown_hang(log_tail(log_path, _STACK_LINES)):
            head += (
                "; its stacks show its script's top level (the function it called has "
                "returned) and a native thread with no Python frame: PyTorch's DDP teardown "
                "hang, when a DistributedDataParallel model outlives "
                "dist.destroy_process_group(); free the model first (docs/job-spec.md)"
            )
    else:
        head = (
            f"{failure.task_id} failed first ({describe_exit(failure.returncode)} after "
            f"{failure.runtime:.1f} s, attempt {failure.attempt + 1})"
        )
        if failure.returncode in _SHELL_EXITS:
            head += f"; {failure.returncode} is what a shell returns for a "
            head += _SHELL_EXITS[failure.returncode]
        if permanent:
            head += f"; not restarted: exit {failure.returncode} is in restart.never_on"
    if not tail:
        return f"{head}; its log is empty ({log_path})"
    body = "\n".join(f"    {line}" for line in tail)
    return f"{head}; last lines of its log ({log_path}):\n{body}"
