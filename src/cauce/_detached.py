"""The driver process of :func:`cauce.submit`: ``python -m cauce._detached``.

It reads one pickled request on stdin (the validated :class:`~cauce.JobSpec`, the job id chosen
by the caller, the cluster, history URL and home), runs the job to the end with a
:class:`~cauce.gang.JobDriver`, and tells the caller on stdout, in one JSON line, either
``{"started": true}`` (the job is recorded in the history and its gang is being placed) or
``{"error": ...}`` (the job was refused before it started: a bad workdir, a gang that can never
fit; the caller raises the same exception). Its own output goes to ``RUN_DIR/driver.log``.

It runs in its own session, so a Ctrl-C meant for the caller (a notebook's interrupt) does not
reach it; the caller stops it with SIGTERM (:meth:`cauce.Job.kill`), as ``cauce kill`` does.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import IO, Any

from cauce.errors import CauceError

__all__ = ["error_payload", "main"]


def error_payload(exc: CauceError) -> dict[str, Any]:
    """An error as JSON: its class (importable), its message and its plain attributes."""
    attrs = {
        key: value
        for key, value in vars(exc).items()
        if isinstance(value, str | int | float | bool | type(None))
    }
    kind = type(exc)
    return {
        "error": {
            "module": kind.__module__,
            "class": kind.__qualname__,
            "message": str(exc),
            "attrs": attrs,
        }
    }


class _Announcer:
    """The driver's console: its first status line means the job is recorded (the driver
    records the job, then says so): that is when the caller is told ``started``."""

    def __init__(self, channel: IO[str]) -> None:
        self.channel: IO[str] | None = channel

    def started(self) -> None:
        if self.channel is not None:
            self.channel.write(json.dumps({"started": True}) + "\n")
            self.channel.close()
            self.channel = None

    def fail(self, exc: CauceError) -> None:
        if self.channel is not None:
            self.channel.write(json.dumps(error_payload(exc)) + "\n")
            self.channel.close()
            self.channel = None

    def status(self, text: str) -> None:
        sys.stderr.write(f"cauce: {text}\n")
        sys.stderr.flush()
        self.started()

    def output(self, task_id: str, line: str) -> None:
        pass  # the task's log has it


def main() -> int:
    request = pickle.loads(sys.stdin.buffer.read())
    home = Path(request["home"])
    run_dir = home / "runs" / request["job_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    log = os.open(run_dir / "driver.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, sys.stdout.fileno())
    os.dup2(log, sys.stderr.fileno())
    os.close(log)
    announcer = _Announcer(channel)
    from cauce.cluster import open_cluster
    from cauce.gang import JobDriver
    from cauce.history import open_store

    try:
        with open_cluster(request["cluster"], request["spec"]) as backend:
            store = open_store(request["history"])
            try:
                driver = JobDriver(
                    request["spec"],
                    backend,
                    store,
                    home,
                    console=announcer,
                    job_id=request["job_id"],
                )
                result = driver.run()
            finally:
                store.close()
    except CauceError as exc:
        announcer.fail(exc)
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    announcer.started()
    return 0 if result.ok else 130 if result.status == "killed" else 1


if __name__ == "__main__":
    sys.exit(main())
