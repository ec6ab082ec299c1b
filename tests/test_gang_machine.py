"""The gang state machine, driven with events alone: no processes, no sleeps."""

from __future__ import annotations

from cauce.gang._machine import (
    Failure,
    Finish,
    GangMachine,
    GangStopped,
    Phase,
    Reserved,
    RestartDue,
    StartAttempt,
    StopGang,
    StopRequested,
    TaskExited,
    TimedOut,
    WaitBeforeRestart,
)
from cauce.history import TaskStatus
from cauce.spec import RestartPolicy

TASKS = ("worker-0", "worker-1")


def machine(max_restarts: int = 0, tracked: tuple[str, ...] = TASKS, tasks=TASKS) -> GangMachine:
    return GangMachine.for_tasks(tasks, tracked, RestartPolicy(max_restarts, backoff=2.0))


def test_success_needs_every_tracked_task() -> None:
    m = machine()
    assert m.handle(Reserved()) == [StartAttempt(0)]
    assert m.handle(TaskExited("worker-1", 0, 1.0, 0)) == []
    assert m.handle(TaskExited("worker-0", 0, 1.2, 0)) == [StopGang("completed")]
    assert m.handle(GangStopped()) == [Finish("succeeded")]
    assert m.phase is Phase.DONE
    assert m.handle(TaskExited("worker-0", 0, 1.2, 0)) == []


def test_first_failure_is_root_cause_and_stops_gang() -> None:
    m = machine()
    m.handle(Reserved())
    assert m.handle(TaskExited("worker-1", 3, 12.4, 0)) == [StopGang("failure")]
    # worker-0 dies of our SIGTERM: a consequence, not a cause
    assert m.handle(TaskExited("worker-0", -15, 12.5, 0)) == []
    assert m.handle(GangStopped()) == [Finish("failed", failure=Failure("worker-1", 3, 12.4, 0))]


def test_an_exit_is_recorded_as_judged_before_the_machine_takes_it() -> None:
    m = machine()
    m.handle(Reserved())
    assert m.recorded_exit(Reserved()) is None
    cause = TaskExited("worker-1", 3, 12.4, 0)
    assert m.recorded_exit(cause) == (cause, TaskStatus.FAILED)
    m.handle(cause)
    # worker-0, killed by the stop that worker-1's failure asked for, was stopped
    killed = TaskExited("worker-0", -15, 12.5, 0)
    assert m.recorded_exit(killed) == (killed, TaskStatus.STOPPED)
    done = TaskExited("worker-0", 0, 12.5, 0)
    assert m.recorded_exit(done) == (done, TaskStatus.SUCCEEDED)  # done before the stop came


def test_exit_zero_then_failure_is_not_success() -> None:
    m = machine()
    m.handle(Reserved())
    assert m.handle(TaskExited("worker-0", 0, 1.0, 0)) == []
    assert m.handle(TaskExited("worker-1", 1, 2.0, 0)) == [StopGang("failure")]
    assert m.handle(GangStopped())[0].status == "failed"  # type: ignore[union-attr]


def test_restarts_with_backoff_then_gives_up() -> None:
    m = machine(max_restarts=2)
    m.handle(Reserved())
    assert m.handle(TaskExited("worker-0", -9, 5.0, 0)) == [StopGang("failure")]
    assert m.handle(GangStopped()) == [WaitBeforeRestart(2.0, 1, 2)]
    # a stale exit of attempt 0 arriving late changes nothing
    assert m.handle(TaskExited("worker-1", -15, 5.1, 0)) == []
    assert m.handle(RestartDue()) == [StartAttempt(1)]
    assert m.handle(TaskExited("worker-1", 2, 1.0, 1)) == [StopGang("failure")]
    assert m.handle(GangStopped()) == [WaitBeforeRestart(4.0, 2, 2)]
    assert m.handle(RestartDue()) == [StartAttempt(2)]
    assert m.handle(TaskExited("worker-1", 2, 1.0, 2)) == [StopGang("failure")]
    assert m.handle(GangStopped()) == [Finish("failed", failure=Failure("worker-1", 2, 1.0, 2))]
    assert m.restarts == 2
    assert [f.attempt for f in m.failures] == [0, 1, 2]


def test_exit_codes_in_never_on_are_not_restarted() -> None:
    policy = RestartPolicy(3, backoff=2.0, never_on=(2, 127))
    for code in (127, 2):
        m = GangMachine.for_tasks(TASKS, TASKS, policy)
        m.handle(Reserved())
        assert m.handle(TaskExited("worker-1", code, 3.0, 0)) == [StopGang("failure")]
        assert m.handle(GangStopped()) == [
            Finish("failed", failure=Failure("worker-1", code, 3.0, 0))
        ]
        assert m.restarts == 0 and m.permanent
    m = GangMachine.for_tasks(TASKS, TASKS, policy)
    m.handle(Reserved())
    m.handle(TaskExited("worker-1", 126, 3.0, 0))  # not in this never_on: restarted
    assert m.handle(GangStopped()) == [WaitBeforeRestart(2.0, 1, 3)]


def test_restart_then_success() -> None:
    m = machine(max_restarts=1)
    m.handle(Reserved())
    m.handle(TaskExited("worker-0", 1, 1.0, 0))
    m.handle(GangStopped())
    assert m.handle(RestartDue()) == [StartAttempt(1)]
    m.handle(TaskExited("worker-0", 0, 1.0, 1))
    assert m.handle(TaskExited("worker-1", 0, 1.0, 1)) == [StopGang("completed")]
    assert m.handle(GangStopped()) == [Finish("succeeded")]


def test_untracked_tasks_are_stopped_when_tracked_finish() -> None:
    m = machine(tasks=("chief-0", "worker-0", "ps-0"), tracked=("chief-0", "worker-0"))
    m.handle(Reserved())
    m.handle(TaskExited("worker-0", 0, 1.0, 0))
    assert m.handle(TaskExited("chief-0", 0, 1.0, 0)) == [StopGang("completed")]
    assert m.handle(TaskExited("ps-0", -15, 1.1, 0)) == []
    assert m.handle(GangStopped()) == [Finish("succeeded")]


def test_untracked_failure_fails_the_gang() -> None:
    m = machine(tasks=("worker-0", "ps-0"), tracked=("worker-0",))
    m.handle(Reserved())
    assert m.handle(TaskExited("ps-0", 1, 1.0, 0)) == [StopGang("failure")]


def test_interrupt_while_running_and_during_backoff() -> None:
    m = machine(max_restarts=3)
    m.handle(Reserved())
    assert m.handle(StopRequested("interrupted (SIGINT)")) == [StopGang("killed")]
    assert m.handle(GangStopped()) == [Finish("killed", reason="interrupted (SIGINT)")]

    m = machine(max_restarts=3)
    m.handle(Reserved())
    m.handle(TaskExited("worker-0", 1, 1.0, 0))
    m.handle(GangStopped())
    assert m.phase is Phase.BACKOFF
    assert m.handle(StopRequested("killed by cauce kill")) == [
        Finish("killed", reason="killed by cauce kill")
    ]
    assert m.handle(RestartDue()) == []


def test_interrupt_while_stopping_for_failure_does_not_restart() -> None:
    m = machine(max_restarts=3)
    m.handle(Reserved())
    m.handle(TaskExited("worker-0", 1, 1.0, 0))
    assert m.handle(StopRequested("interrupted (SIGTERM)")) == []
    assert m.handle(GangStopped()) == [Finish("killed", reason="interrupted (SIGTERM)")]


def test_timeout() -> None:
    m = machine(max_restarts=3)
    m.handle(Reserved())
    assert m.handle(TimedOut(30)) == [StopGang("timeout")]
    assert m.handle(GangStopped()) == [Finish("failed", reason="timed out after 30 s")]


def test_stop_before_placement() -> None:
    m = machine()
    assert m.handle(StopRequested("interrupted (SIGINT)")) == [
        Finish("killed", reason="interrupted (SIGINT)")
    ]


def test_hung_task_is_a_failure_and_restarts() -> None:
    from cauce.gang._machine import TaskHung

    m = machine(max_restarts=1)
    m.handle(Reserved())
    assert m.handle(TaskHung("worker-1", 31.0, 40.0, 0)) == [StopGang("failure")]
    assert m.failure == Failure("worker-1", None, 40.0, 0, 31.0)
    assert m.handle(TaskHung("worker-0", 31.0, 40.0, 0)) == []
    assert m.handle(GangStopped()) == [WaitBeforeRestart(2.0, 1, 1)]
    m.handle(RestartDue())
    # a hung report about a task that already exited is ignored
    m.handle(TaskExited("worker-0", 0, 1.0, 1))
    assert m.handle(TaskHung("worker-0", 31.0, 40.0, 1)) == []


def test_hang_names_the_task_that_stopped_first() -> None:
    """The first task past its hang timeout (worker-0, waiting for a peer) is not the cause:
    the one whose process is stopped (state T) is, even if it reported more recently."""
    from cauce.gang._machine import TaskHung, TaskSilence

    m = machine()
    m.handle(Reserved())
    silent = (TaskSilence("worker-0", 31.0, "S", False), TaskSilence("worker-1", 12.0, "T", False))
    assert m.handle(TaskHung("worker-0", 31.0, 40.0, 0, silent)) == [StopGang("failure")]
    assert m.failure == Failure("worker-1", None, 40.0, 0, 12.0, "T", False)
    assert m.handle(GangStopped()) == [Finish("failed", failure=m.failure)]


def test_hang_without_a_stopped_task_names_the_oldest_silence() -> None:
    from cauce.gang._machine import TaskHung, TaskSilence

    tasks = ("worker-0", "worker-1", "worker-2")
    # worker-2 is in uninterruptible sleep using no CPU: it comes before older silences
    m = machine(tasks=tasks, tracked=tasks)
    m.handle(Reserved())
    silent = (
        TaskSilence("worker-0", 31.0, "S", False),
        TaskSilence("worker-1", 35.0, "R", True),
        TaskSilence("worker-2", 5.0, "D", False),
    )
    m.handle(TaskHung("worker-0", 31.0, 40.0, 0, silent))
    assert m.failure == Failure("worker-2", None, 40.0, 0, 5.0, "D", False)
    # a D state while using CPU is ordinary I/O: the oldest silence is named, its state dropped
    m = machine(tasks=tasks, tracked=tasks)
    m.handle(Reserved())
    busy = (silent[0], silent[1], TaskSilence("worker-2", 5.0, "D", True))
    m.handle(TaskHung("worker-0", 31.0, 40.0, 0, busy))
    assert m.failure == Failure("worker-1", None, 40.0, 0, 35.0, "", True)
    # a task that already exited is never named; without facts, the task that timed out is
    m = machine(tasks=tasks, tracked=tasks)
    m.handle(Reserved())
    m.handle(TaskExited("worker-2", 0, 3.0, 0))
    m.handle(TaskHung("worker-1", 31.0, 40.0, 0))
    assert m.failure == Failure("worker-1", None, 40.0, 0, 31.0)
