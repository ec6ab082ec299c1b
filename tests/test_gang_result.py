"""What ``cauce.run`` returns, in this process: a typed status and, for a failed gang, the typed
failure of its first failed task, rendered once as the root cause."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import cauce
from cauce.gang import Failure, JobResult, PrintConsole
from cauce.history import JobStatus, TaskStatus, open_store
from helpers import BIN


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> JobResult:
    monkeypatch.setenv("CAUCE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAUCE_LEASE_DIR", str(tmp_path / "leases"))
    spec = cauce.parse_job(
        {
            "name": "result",
            "command": [
                sys.executable,
                str(BIN / "exit_with.py"),
                str(code),
                "--only-task",
                "worker-1",
            ],
            "roles": {"worker": {"instances": 2}},
        },
        base_dir=tmp_path,
    )
    history = f"sqlite:///{tmp_path / 'history.db'}"
    return cauce.run(spec, history=history, console=PrintConsole(quiet=True))


def test_a_failed_job_carries_the_failure_of_its_first_failed_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(tmp_path, monkeypatch, 3)
    assert result.status is JobStatus.FAILED and not result.ok
    failure = result.failure
    assert isinstance(failure, Failure)
    assert (failure.task_id, failure.returncode, failure.attempt) == ("worker-1", 3, 0)
    assert result.root_cause.startswith("worker-1 failed first (exit 3 after ")
    assert "worker-1: starting, attempt" in result.root_cause  # the tail of its log
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        job = store.get_job(result.job_id)
        assert (job.status, job.root_cause) == (JobStatus.FAILED, result.root_cause)
        statuses = {t.task_id: t.status for t in store.get_tasks(result.job_id)}
        assert statuses["worker-1"] is TaskStatus.FAILED
    finally:
        store.close()


def test_a_job_that_succeeds_has_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(tmp_path, monkeypatch, 0)
    assert (result.status, result.failure, result.root_cause) == (JobStatus.SUCCEEDED, None, "")


def test_a_root_cause_never_heads_nothing(tmp_path: Path) -> None:
    from cauce.gang._logtail import attempt_header
    from cauce.gang._result import render_root_cause

    log = tmp_path / "worker-0.log"
    failure = Failure("worker-0", 127, 0.1, 1)
    log.write_text(attempt_header(0, "j") + "boom\n" + attempt_header(1, "j") + "\n  \n\n")
    cause = render_root_cause(failure, str(log), None, permanent=True)
    assert cause == (
        "worker-0 failed first (exit 127 after 0.1 s, attempt 2); 127 is what a shell returns "
        f"for a command not found; not restarted: exit 127 is in restart.never_on; its log is "
        f"empty ({log})"
    )
    log.write_text(attempt_header(0, "j") + "\nTraceback:\n  oops\n\n")
    assert render_root_cause(Failure("worker-0", 1, 0.1, 0), str(log), None).endswith(
        f"last lines of its log ({log}):\n    Traceback:\n      oops"
    )
