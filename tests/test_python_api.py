"""The Python API from a notebook: a real Jupyter kernel (nbclient) runs
tests/data/python-api.ipynb, which submits a 2-rank job, waits for it and reads its metrics;
then a cell that waits on a sleeping job is interrupted as a notebook's stop button does, and
the job is stopped with every process of it gone. Then `cauce.Job.attach`, on jobs another
process submitted. docs/python-api.md's examples run in test_doc_commands.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import ROOT, cauce, gone

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = ROOT / "tests" / "data" / "python-api.ipynb"

_REPORT = "import cauce; [cauce.report(s, acc=s / 10) for s in range(5)]"
_TWO = f"""
name: two
command: {sys.executable} -c "{_REPORT}; print('done', cauce.context().rank)"
roles: {{worker: {{instances: 2, resources: {{cpus: 0.5}}}}}}
"""
_SLEEPY = f"""
name: sleepy
command: {sys.executable} -c "import time; open('sleeping', 'w').close(); time.sleep(600)"
roles: {{worker: {{instances: 2, resources: {{cpus: 0.5}}}}}}
grace_period: 2
"""


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_submits_waits_reads_metrics_and_interrupts(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    (tmp_path / "two.yaml").write_text(_TWO)
    (tmp_path / "sleepy.yaml").write_text(_SLEEPY)
    shutil.copy(NOTEBOOK, tmp_path / "nb.ipynb")
    notebook = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    with client.setup_kernel(env=cauce_env, cwd=str(tmp_path)):
        first = client.execute_cell(notebook.cells[1], 1)
        text = "".join(o.get("text", "") for o in first.outputs)
        assert "succeeded 10 values; ['[worker-0] done 0', '[worker-1] done 1']" in text, text
        assert client.km is not None
        kernel = client.km.provisioner.pid  # type: ignore[union-attr]

        def stop_button() -> None:
            """What a notebook's interrupt does to an ipykernel: SIGINT to the kernel."""
            _wait_for(tmp_path / "sleeping", 120)  # the job runs, the cell waits on it
            os.kill(kernel, signal.SIGINT)

        pressing = threading.Thread(target=stop_button, daemon=True)
        pressing.start()
        with pytest.raises(nbclient.exceptions.CellExecutionError, match="KeyboardInterrupt"):
            client.execute_cell(notebook.cells[2], 2)
        pressing.join(10)

    jobs = json.loads(cauce(["jobs", "--format", "json"], cauce_env).stdout)
    assert [(j["name"], j["status"]) for j in jobs] == [
        ("sleepy", "killed"),
        ("notebook", "succeeded"),
    ]
    show = json.loads(cauce(["show", jobs[0]["id"], "--format", "json"], cauce_env).stdout)
    pids = [show["driver_pid"], *(t["pid"] for t in show["tasks"])]
    assert len(pids) == 3 and all(pids)
    # gone() polls, and takes a process reaped between two looks as gone (pid_exists and then
    # Process() raised NoSuchProcess for one); the tasks would sleep 600 s
    assert gone(pids), f"processes of the interrupted job still alive: {pids}"


@pytest.mark.timeout(180)
def test_a_job_submitted_by_another_process_is_attached_by_an_id_prefix(
    tmp_path: Path, cauce_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cauce.Job.attach`: a job that another Python process submitted (that process gone) is
    found by a unique prefix of its id, read, and stopped from here; a prefix of no job, or of
    several, is a HistoryError that says so."""
    import subprocess

    import cauce as api

    (tmp_path / "sleepy.yaml").write_text(_SLEEPY)
    submitter = "import cauce\nprint(*(cauce.submit('sleepy.yaml').id for _ in range(2)))\n"
    done = subprocess.run(
        [sys.executable, "-c", submitter],
        cwd=tmp_path,
        env=cauce_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split()  # sleepy-YYYYmmdd-HHMMSS-xxxx, twice
    shared = next(  # "sleepy-" at least: what both ids start with
        first[:i] for i in range(len(first), 0, -1) if second.startswith(first[:i])
    )
    for name in ("CAUCE_HOME", "CAUCE_LEASE_DIR"):
        monkeypatch.setenv(name, cauce_env[name])

    job = api.Job.attach(first[: len(shared) + 1])  # the shortest prefix that is first's only
    assert job.id == first
    deadline = time.monotonic() + 120
    while job.status() != "running":  # its tasks start; the process that submitted it is gone
        assert time.monotonic() < deadline, job.row()
        time.sleep(0.2)
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.5)  # the job goes on
    with pytest.raises(api.HistoryError, match=f"job id '{re.escape(shared)}' is ambiguous: "):
        api.Job.attach(shared)
    with pytest.raises(api.HistoryError, match=r"no job 'nothing' in .*; see 'cauce jobs'"):
        api.Job.attach("nothing")

    shown = [
        json.loads(cauce(["show", i, "--format", "json"], cauce_env).stdout)
        for i in done.stdout.split()
    ]
    pids = [pid for s in shown for pid in (s["driver_pid"], *(t["pid"] for t in s["tasks"]))]
    assert len(pids) == 6 and all(pids)
    assert job.kill() == "killed"
    assert job.wait(timeout=30).status == "killed"
    assert api.Job.attach(second).kill() == "killed"
    assert gone(pids), f"processes of the attached jobs still alive: {pids}"


@pytest.mark.timeout(120)
def test_run_plan_and_tune_take_a_mapping_of_the_job_fields(
    tmp_path: Path, cauce_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `submit` does, `run`, `plan` and `tune.tune` take the job as a mapping (as in the
    YAML, relative paths from the working folder); anything else is a TypeError naming what
    they take."""
    import cauce as api
    import cauce.tune

    for name in ("CAUCE_HOME", "CAUCE_LEASE_DIR"):
        monkeypatch.setenv(name, cauce_env[name])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "score.py").write_text(
        "import cauce\ncauce.report(0, loss=(cauce.context().params['x'] - 0.3) ** 2)\n"
    )
    job = {"name": "mapped", "command": f"{sys.executable} score.py"}
    assert api.plan(job).startswith("job mapped (none): 1 tasks on cluster local")
    assert api.run({**job, "env": {"CAUCE_PARAMS": '{"x": 0.5}'}}).ok
    study = cauce.tune.tune(
        {
            **job,
            "tune": {
                "objective": {"metric": "loss", "direction": "min"},
                "space": {"x": {"type": "uniform", "low": 0, "high": 1}},
                "pruner": "none",
            },
        },
        trials=2,
        parallel=1,
    )
    assert study.ok and [str(t.state) for t in study.trials] == ["complete", "complete"]
    with pytest.raises(TypeError, match="a job is a job file's path, a mapping of its fields"):
        api.run(42)  # type: ignore[arg-type]
