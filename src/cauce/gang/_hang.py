"""What the driver knows of silent tasks when a hang timeout passes: how long each has been
silent, and what the OS says of its processes (stopped, stuck in uninterruptible sleep, using CPU
or not). The state machine names the root cause from these facts."""

from __future__ import annotations

import time
from collections.abc import Mapping

from cauce.cluster.api import RunningGang
from cauce.gang._machine import Failure, TaskHung, TaskSilence

__all__ = ["CPU_WINDOW", "first_hung", "show_stacks", "silences"]

#: seconds between the two looks at the tasks' CPU time
CPU_WINDOW = 0.5
#: seconds for a hung task's stacks to reach its log
STACKS_WAIT = 0.5


def show_stacks(failure: Failure | None, running: RunningGang | None) -> None:
    """Before a gang stopped for a hung task is stopped: that task's stacks in its log (whose
    last lines the root cause quotes), where it can print them (a warm task, local cluster)."""
    if failure is None or failure.returncode is not None or running is None:
        return
    if running.show_stacks(failure.task_id):
        time.sleep(STACKS_WAIT)


def first_hung(
    running: RunningGang, idle: Mapping[str, float], limit: float, runtime: float, attempt: int
) -> TaskHung | None:
    """The first task of ``idle`` silent for more than ``limit`` seconds, as the machine's event,
    with what the OS says of every silent task (who stopped first is the machine's to say)."""
    late = next((task_id for task_id, seconds in idle.items() if seconds > limit), None)
    if late is None:
        return None
    return TaskHung(late, idle[late], runtime, attempt, silences(running, idle))


def silences(
    running: RunningGang, idle: Mapping[str, float], window: float = CPU_WINDOW
) -> tuple[TaskSilence, ...]:
    """One :class:`TaskSilence` per task of ``idle`` (task id -> seconds since its last sign of
    life). Where the cluster can see the processes, looks twice, ``window`` seconds apart, to
    tell a task that uses CPU from one that does not; elsewhere, the heartbeats only."""
    before = running.probe()
    if not before:
        return tuple(TaskSilence(task_id, seconds) for task_id, seconds in idle.items())
    time.sleep(window)
    after = running.probe()
    found = []
    for task_id, seconds in idle.items():
        then, now = before.get(task_id), after.get(task_id)
        if then is None or now is None:
            found.append(TaskSilence(task_id, seconds))
            continue
        found.append(TaskSilence(task_id, seconds, now.state, now.cpu > then.cpu))
    return tuple(found)
