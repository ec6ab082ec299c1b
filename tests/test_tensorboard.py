"""TensorBoard: a job's ``tensorboard:`` section, ``cauce.report`` as scalars, and
``cauce tensorboard JOB`` serving them (a real TensorBoard, read through its HTTP API)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import cauce, cauce_popen, py, write_job

pytest.importorskip("tensorboard")
httpx = pytest.importorskip("httpx")


def _poll(url: str, proc: subprocess.Popen[str], ready: Any, within: float = 90.0) -> Any:
    """GET ``url`` until ``ready(json)`` holds."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            f"tensorboard exited: {proc.stderr.read() if proc.stderr else ''}"
        )
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200:
                last = answer.json()
                if ready(last):
                    return last
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered as expected; last answer: {last}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_ranks_scalars_served_by_cauce_tensorboard(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    job = write_job(
        tmp_path,
        f"""
        name: tbjob
        command: {py("tb_report.py", out)}
        roles:
          worker: {{instances: 2}}
        tensorboard: {{logdir: tb, report: true}}
        """,
    )
    done = cauce(["run", str(job)], cauce_env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    envs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    [folder] = {env["CAUCE_TENSORBOARD_DIR"] for env in envs.values()}  # one for the job
    assert Path(folder).parent == tmp_path / "tb" and Path(folder).name.startswith("tbjob-")
    assert envs["worker-0"]["IS_CHIEF"] == "true" and int(envs["worker-0"]["TB_PORT"]) > 0
    assert envs["worker-1"]["TB_PORT"] is None  # TonY's TB_PORT: the chief's only
    assert {env["CAUCE_TENSORBOARD_REPORT"] for env in envs.values()} == {"1"}

    board = cauce_popen(["tensorboard", "tbjob", "--port", "0"], cauce_env)
    try:
        assert board.stdout is not None
        url = board.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        tags = _poll(
            url + "data/plugin/scalars/tags",
            board,
            lambda runs: (
                set(runs) == {"worker-0", "worker-1"}
                and all(set(tags) == {"loss", "acc"} for tags in runs.values())
            ),
        )
        assert set(tags) == {"worker-0", "worker-1"}
        points = _poll(
            url + "data/plugin/scalars/scalars?run=worker-1&tag=loss", board, lambda p: len(p) == 5
        )
    finally:
        board.terminate()
        board.communicate(timeout=30)
    assert [step for _, step, _ in points] == [0, 1, 2, 3, 4]
    assert [round(value, 4) for _, _, value in points] == [2.0, 1.5, 1.3333, 1.25, 1.2]


def test_default_folder_and_the_chief_in_the_dry_run(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    job = write_job(
        tmp_path,
        """
        name: tbdry
        command: python -c pass
        roles:
          worker: {instances: 1}
          chief: {instances: 1}
        tensorboard:
        """,
    )
    done = cauce(["run", "--dry-run", str(job)], cauce_env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "/tensorboard" in done.stdout and "CAUCE_TENSORBOARD_DIR" in done.stdout
    assert done.stdout.count("TB_PORT") == 1, done.stdout  # the chief's only
    assert "CAUCE_TENSORBOARD_REPORT" not in done.stdout  # report is opt-in


def test_a_job_without_tensorboard(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    job = write_job(
        tmp_path, "name: plain\ncommand: python -c pass\nroles:\n  worker: {instances: 1}\n"
    )
    assert cauce(["run", str(job)], cauce_env, timeout=120).returncode == 0
    done = cauce(["tensorboard", "plain"], cauce_env, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: job plain-") and "has no tensorboard:" in done.stderr
    bad = write_job(tmp_path, "name: b\ncommand: x\ntensorboard: {logdri: tb}\n", "bad.yaml")
    done = cauce(["run", str(bad)], cauce_env, timeout=60)
    assert done.returncode == 2 and "tensorboard.logdri is not a known field" in done.stderr


@pytest.mark.slow
def test_an_address_beyond_loopback_needs_insecure_and_bad_ports_and_hosts_are_refused(
    cauce_env: dict[str, str],
) -> None:
    """Checked before the job is looked up: no job needed, nothing started."""
    cases = (
        (["--host", "0.0.0.0"], "--host 0.0.0.0 would show the job's logs to the network"),
        (["--port", "70000"], "argument --port: must be a port from 0 to 65535"),
        (["--port", "-1"], "argument --port: must be a port from 0 to 65535"),
        (["--host", "999.1.1.1", "--port", "0", "--insecure"], "--host 999.1.1.1 is not an"),
    )
    said_first = ""
    for extra, said in cases:
        done = cauce(["tensorboard", "nojob", *extra], cauce_env, timeout=60)
        assert done.returncode == 2 and said in done.stderr, (extra, done.stderr)
        assert done.stderr.splitlines()[-1].startswith("error: ") and "Traceback" not in done.stderr
        said_first = said_first or done.stderr
    assert "an SSH tunnel (ssh -L 6006:127.0.0.1:6006 HOST), or pass --insecure" in said_first
