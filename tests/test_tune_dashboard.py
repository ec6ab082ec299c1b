"""optuna-dashboard opens the studies of ``cauce tune`` as they are, in the history database.

A real ``cauce tune`` makes a study of two trials in a fresh ``history.db``; a real
``optuna-dashboard`` is started on it with the command docs/tuning.md gives, on 127.0.0.1 and a
free port, and its JSON API, read with httpx, lists the study with its two trials.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import cauce, free_port, write_job

pytest.importorskip("optuna_dashboard")
httpx = pytest.importorskip("httpx")

JOB = """
name: quadratic
command: {python} -c "import cauce; cauce.report(0, loss=(cauce.context().params['x'] - 2) ** 2)"
tune:
  objective: {{metric: loss, direction: min}}
  space:
    x: {{type: uniform, low: -5, high: 5}}
  trials: 2
  parallel: 1
"""


def _get(url: str, proc: subprocess.Popen[bytes], within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        assert proc.poll() is None, "optuna-dashboard exited"
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200:
                return answer.json()
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer from {url}")
        time.sleep(0.3)


@pytest.mark.timeout(240)
def test_optuna_dashboard_opens_the_history_database(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    job = write_job(tmp_path, JOB.format(python=sys.executable))
    done = cauce(["tune", str(job), "--plain"], cauce_env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    history = Path(cauce_env["CAUCE_HOME"]) / "history.db"
    assert history.is_file()
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert dashboard, "optuna-dashboard is not installed beside this Python"
    port = free_port()
    # The command of docs/tuning.md (optuna-dashboard "sqlite:///$CAUCE_HOME/history.db" ...).
    proc = subprocess.Popen(
        [dashboard, f"sqlite:///{history}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        studies = _get(f"http://127.0.0.1:{port}/api/studies", proc)["study_summaries"]
        [study] = [s for s in studies if s["study_name"] == "quadratic"]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert study["directions"] == ["minimize"]
    trials = detail["trials"]
    assert [t["state"] for t in trials] == ["Complete", "Complete"]
    assert all(len(t["values"]) == 1 for t in trials)
