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
