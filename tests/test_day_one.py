"""What a newcomer meets first, through the CLI as it is typed: jobs without resources run like
torchrun's, permanent failures are not retried, jobs are found by name."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from helpers import cauce, py, write_job

# Each test runs a few `cauce` commands (about a second each).
pytestmark = pytest.mark.slow


def test_oversubscribed_host_runs_and_permanent_failures_stop_at_once(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    # Two CPUs, as this host has (and the same on a larger one).
    home = Path(cauce_env["CAUCE_HOME"])
    home.mkdir()
    (home / "config.yaml").write_text("local: {cpus: 2}\n", encoding="utf-8")

    # 5 tasks without resources.cpus on 2 CPUs: run, with one note.
    five = write_job(
        tmp_path,
        """
        name: five
        command: python -c "import os; print('rank', os.environ['RANK'])"
        framework: pytorch
        roles: {worker: {instances: 5}}
        """,
        "five.yaml",
    )
    done = cauce(["run", str(five)], cauce_env)
    assert done.returncode == 0, done.stderr
    assert sorted(re.findall(r"rank \d", done.stdout)) == [f"rank {i}" for i in range(5)]
    assert done.stderr.count("note: ") == 1 and "host is oversubscribed" in done.stderr

    # Declared resources are still checked: refused, naming the file and local.cpus.
    big = write_job(
        tmp_path,
        "command: 'true'\nroles: {worker: {instances: 5, resources: {cpus: 1}}}\n",
        "big.yaml",
    )
    done = cauce(["run", str(big)], cauce_env)
    assert done.returncode == 2
    assert f"error: {big}: this job can never fit on this host: needs 5 CPUs" in done.stderr
    assert "local.cpus: 5" in done.stderr

    # A command that does not exist: --dry-run warns, run refuses with exit 2, nothing starts.
    missing = write_job(
        tmp_path,
        "command: no-such-program --epochs 3\nrestart: {max_restarts: 3}\n",
        "missing.yaml",
    )
    dry = cauce(["run", "--dry-run", str(missing)], cauce_env)
    assert dry.returncode == 0 and "warning: " in dry.stdout and "no-such-program" in dry.stdout
    done = cauce(["run", str(missing)], cauce_env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {missing}: command runs 'no-such-program', which is not found on the task's "
        "PATH; install it, or give its full path"
    ]

    # Exit 127 mid-run: the root cause says why it is not restarted, and it is not.
    late = write_job(
        tmp_path,
        f"command: {py('exit_with.py', 127, '--after', 0.2)}\n"
        "restart: {max_restarts: 3, backoff: 0s}\n",
        "late.yaml",
    )
    done = cauce(["run", str(late)], cauce_env)
    assert done.returncode == 1
    assert "not restarted: exit 127 is in restart.never_on" in done.stderr
    assert "restarting" not in done.stderr + done.stdout
    shown = cauce(["show", "late"], cauce_env)
    assert "attempts:  1 (restarts: 0)" in shown.stdout
    assert "something went wrong, exiting with 127" in shown.stdout

    with closing(sqlite3.connect(home / "history.db")) as db:
        names = [name for (name,) in db.execute("select name from jobs order by created_at")]
    assert names == ["five", "late"]  # the refused jobs never started


def test_jobs_found_by_name_and_filtered(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    import cauce as api
    from cauce.gang import PrintConsole

    home = Path(cauce_env["CAUCE_HOME"])
    home.mkdir()
    for name, code in (("a", 0), ("b", 3), ("a", 3)):  # run here: the CLI reads what they left
        job = write_job(tmp_path, f"name: {name}\ncommand: {py('exit_with.py', code)}\n")
        url = f"sqlite:///{home / 'history.db'}"
        api.run(job, cluster="local", history=url, home=home, console=PrintConsole(quiet=True))
    listed = cauce(["jobs"], cauce_env).stdout.splitlines()[1:]
    ids = [line.split()[0] for line in listed]  # newest first: a (failed), b, a (succeeded)
    assert [line.split()[1:3] for line in listed] == [
        ["a", "failed"],
        ["b", "failed"],
        ["a", "succeeded"],
    ]

    shown = cauce(["show", "a"], cauce_env)
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"job:       {ids[0]}\n")
    assert f"2 jobs are named a; this is the latest, {ids[0]}" in shown.stderr
    logs = cauce(["logs", "a"], cauce_env)
    assert "exiting with 3" in logs.stdout
    assert cauce(["logs", ids[2][:-2]], cauce_env).stdout.endswith("exiting with 0\n")
    killed = cauce(["kill", "b"], cauce_env)  # one job of that name: nothing more to say
    assert killed.stdout == f"job {ids[1]} is not running (failed)\n" and killed.stderr == ""

    def jobs(*args: str) -> list[str]:
        done = cauce(["jobs", *args], cauce_env)
        assert done.returncode == 0, done.stderr
        return [line.split()[0] for line in done.stdout.splitlines()[1:]]

    assert jobs("--name", "a") == [ids[0], ids[2]]
    assert jobs("--status", "failed", "--limit", "1") == [ids[0]]
    assert jobs("--status", "succeeded,killed", "--status", "lost", "--since", "1h") == [ids[2]]
    assert jobs("--since", "2999-01-01") == []
    bad = cauce(["jobs", "--status", "done"], cauce_env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --status must be one of")


def test_every_mistake_of_a_file_at_once(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    job = write_job(
        tmp_path,
        """
        name: four
        command: python train.py
        roles:
          worker:
            instancs: 2
            resources: {cpus: -1}
        timeout: 10 minutes
        tune:
          objective: {metric: loss, direction: down}
          space: {lr: {type: uniform, low: 0, high: 1}}
        """,
    )
    pipeline = write_job(
        tmp_path,
        """
        name: p
        steps:
          prepare: {function: prep.py:build, engine: pandas}
          train: {job: job.yaml, outputs: [model], env: {X: "${steps.prepare.outputs.dataset}"}}
        """,
        "pipeline.yaml",
    )
    for command in (["run", str(job)], ["tune", str(job)], ["run", str(pipeline)]):
        done = cauce(command, cauce_env)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        where = re.escape(str(command[-1]))
        assert all(re.match(rf"error: {where}:\d+: ", line) for line in lines), lines
        if command[-1] == str(pipeline):
            assert [line.split(": ")[2].split()[0] for line in lines] == [
                "steps.prepare.engine",
                "steps.train.outputs",
            ]
            continue
        assert [line.split(": ")[2].split()[0] for line in lines] == [
            "roles.worker.instancs",
            "roles.worker.resources.cpus",
            "timeout",
            "tune.objective.direction",
        ]
        assert [int(line.split(":")[2]) for line in lines] == [5, 6, 7, 9]
        assert "did you mean 'instances'?" in lines[0]


def test_option_mistakes_of_the_job_commands_are_one_line_each(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """Typos in the commands that read the history: named, with what to do, never a traceback;
    a refusal before anything ran exits 2 (docs/scripting.md)."""
    reports = f'{sys.executable} -c "import cauce; cauce.report(0, loss=1.0)"'
    job = write_job(tmp_path, f"name: met\ncommand: {json.dumps(reports)}\n")
    assert cauce(["run", str(job)], cauce_env).returncode == 0

    def refused(args: list[str], code: int, message: str, env: dict[str, str] = cauce_env) -> None:
        done = cauce(args, env)
        assert (done.returncode, done.stderr) == (code, f"error: {message}\n"), done

    huge = "9" * 23
    refused(["jobs", "--limit", huge], 2, f"--limit must be between 1 and 1,000,000, got {huge}")
    refused(
        ["kill", "met", "--wait", "-1"],
        2,
        "--wait must be a duration like 90, 90s, 10m, 1h or 1h30m, got '-1'",
    )
    assert cauce(["kill", "met", "--wait", "2m"], cauce_env).stdout.endswith("(succeeded)\n")
    missing = cauce(["metrics", "met", "--task", "worker-7"], cauce_env)
    assert missing.returncode == 1
    assert missing.stderr.endswith(" has no task 'worker-7'; its tasks: worker-0\n")
    unknown = cauce(["metrics", "met", "--name", "acc"], cauce_env)
    assert unknown.returncode == 1
    assert unknown.stderr.endswith(" has no metric 'acc'; its metrics: loss\n")
    home_file = tmp_path / "home-file"
    home_file.write_text("")
    refused(
        ["jobs"],
        1,
        f"cannot use {home_file} as cauce's home (not a folder): set $CAUCE_HOME to a folder "
        "you can write to",
        {**cauce_env, "CAUCE_HOME": str(home_file)},
    )
