"""The task runtime: context, report, checkpoint; restarts resume, hangs are caught."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cauce as api
from cauce.runtime import checkpoint
from cauce.runtime.checkpoint import CheckpointError
from helpers import cauce, gone, py, write_job


def test_context_under_plain_python(tmp_path: Path) -> None:
    ctx = api.context({})
    assert (ctx.rank, ctx.world_size, ctx.attempt, ctx.managed) == (0, 1, 0, False)
    assert ctx.is_chief
    env = {
        "CAUCE_JOB_ID": "j",
        "CAUCE_TASK_ID": "worker-1",
        "CAUCE_ROLE": "worker",
        "CAUCE_ROLE_INDEX": "1",
        "CAUCE_RANK": "1",
        "CAUCE_WORLD_SIZE": "2",
        "CAUCE_ATTEMPT": "3",
        "CAUCE_RUN_DIR": str(tmp_path),
        "CAUCE_PARAMS": json.dumps({"lr": 0.1}),
    }
    ctx = api.context(env)
    assert (ctx.rank, ctx.world_size, ctx.attempt, ctx.managed) == (1, 2, 3, True)
    assert not ctx.is_chief
    assert ctx.checkpoint_dir == tmp_path / "checkpoints"
    assert ctx.params == {"lr": 0.1}


def test_checkpoint_save_load_keep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAUCE_RANK", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert checkpoint.load(directory=tmp_path) is None
    for step in range(5):
        checkpoint.save({"w": step}, step, keep=2, directory=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000003", "step-000000004"]
    latest = checkpoint.load(directory=tmp_path)
    assert latest is not None and latest.step == 4 and latest.state == {"w": 4}
    assert checkpoint.load(step=3, directory=tmp_path).state == {"w": 3}  # type: ignore[union-attr]
    with pytest.raises(CheckpointError, match="no checkpoint of step 1"):
        checkpoint.load(step=1, directory=tmp_path)
    with pytest.raises(CheckpointError, match="step must be an int >= 0"):
        checkpoint.save({}, -1, directory=tmp_path)


def test_only_rank_0_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUCE_RANK", "1")
    assert checkpoint.save({"w": 1}, 0, directory=tmp_path) is None
    assert not any(tmp_path.iterdir())
    assert checkpoint.save({"w": 1}, 0, directory=tmp_path, all_ranks=True) is not None
    assert checkpoint.load(directory=tmp_path, rank=1).state == {"w": 1}  # type: ignore[union-attr]


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAUCE_RANK", raising=False)
    checkpoint.save({"w": 0}, 0, directory=tmp_path)

    def broken(state: object, folder: Path) -> tuple[str, Path]:
        (folder / "state.pkl").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_state", broken)
    with pytest.raises(CheckpointError, match="No space left on device"):
        checkpoint.save({"w": 1}, 1, directory=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000000"]
    assert checkpoint.load(directory=tmp_path).state == {"w": 0}  # type: ignore[union-attr]


def test_killed_mid_save_is_never_loaded(tmp_path: Path) -> None:
    """SIGKILL while a large checkpoint is being written: load() still gives the previous one."""
    code = textwrap.dedent(
        f"""
        import sys
        from cauce.runtime import checkpoint
        checkpoint.save({{"w": 0}}, 0, directory={str(tmp_path)!r})
        print("saved", flush=True)
        checkpoint.save({{"w": bytes(2_000_000_000)}}, 1, directory={str(tmp_path)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "saved"
    # wait until the second save has started writing, then kill it
    for _ in range(200):
        if any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()):
            break
        proc.poll()
        os.sched_yield()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    latest = checkpoint.load(directory=tmp_path)
    assert latest is not None and latest.step == 0 and latest.state == {"w": 0}
    # the next save clears what the killed writer left behind
    checkpoint.save({"w": 2}, 2, directory=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000000", "step-000000002"]


def _truncate(path: Path) -> None:
    if path.name == "state.pkl" and not path.exists():  # torch imported here: saved with torch
        path = path.with_name("state.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_load_skips_a_corrupt_latest_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for step in range(3):
        checkpoint.save({"w": step}, step, directory=tmp_path)
    _truncate(tmp_path / "step-000000002" / "state.pkl")
    (tmp_path / "step-000000001" / "meta.json").write_text("{", encoding="utf-8")
    with caplog.at_level("WARNING", logger="cauce.runtime.checkpoint"):
        latest = checkpoint.load(directory=tmp_path)
    assert latest is not None and latest.step == 0 and latest.state == {"w": 0}
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 2
    assert "step-000000002 cannot be read" in skipped[0]
    assert "step-000000001 cannot be read" in skipped[1]
    # asked for by step, a corrupt checkpoint is an error, not a silent fallback
    with pytest.raises(CheckpointError, match="step-000000002 cannot be read"):
        checkpoint.load(step=2, directory=tmp_path)
    _truncate(tmp_path / "step-000000000" / "state.pkl")
    with pytest.raises(CheckpointError, match=r"none of the 3 checkpoints in .* can be read"):
        checkpoint.load(directory=tmp_path)


@pytest.mark.framework
def test_load_wraps_torch_errors_and_falls_back(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    script = textwrap.dedent(
        f"""
        import torch
        from cauce.runtime import checkpoint
        for step in range(2):
            state = {{"w": torch.full((1000,), float(step))}}
            checkpoint.save(state, step, directory={str(tmp_path)!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    _truncate(tmp_path / "step-000000001" / "state.pt")
    latest = checkpoint.load(directory=tmp_path)
    assert latest is not None and latest.step == 0
    assert torch.equal(latest.state["w"], torch.zeros(1000))
    with pytest.raises(CheckpointError, match="step-000000001 cannot be read: RuntimeError"):
        checkpoint.load(step=1, directory=tmp_path)


def test_save_on_a_full_disk_says_so(tmp_path: Path) -> None:
    """A real full file system: a 1 MiB tmpfs (needs root to mount; skipped otherwise)."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        checkpoint.save({"w": 0}, 0, directory=small)
        with pytest.raises(CheckpointError) as info:
            checkpoint.save({"w": bytes(4_000_000)}, 1, directory=small)
        message = str(info.value)
        assert f"cannot write checkpoint {small}/step-000000001: No space left" in message
        assert "bytes written before the disk was full" in message
        # nothing half-written is left, and the previous checkpoint still loads
        assert sorted(p.name for p in small.iterdir()) == ["step-000000000"]
        latest = checkpoint.load(directory=small)
        assert latest is not None and latest.state == {"w": 0}
    finally:
        subprocess.run(["umount", str(small)], check=True)


def _log(out: Path, task: str) -> list[dict[str, object]]:
    lines = (out / f"{task}.log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_reports_reach_history(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: reports
        command: {py("trainer.py", "--epochs", 2, "--out", out)}
        roles:
          worker: {{instances: 2}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 0, done.stderr
    job_id = done.stderr.split("job ", 1)[1].split(":", 1)[0]
    metrics = cauce(["metrics", job_id, "--format", "json"], cauce_env)
    rows = json.loads(metrics.stdout)
    assert len(rows) == 2 * 2 * 5
    assert {r["task"] for r in rows} == {"worker-0", "worker-1"}
    losses = [r["value"] for r in rows if r["task"] == "worker-0"]
    assert losses == sorted(losses, reverse=True)
    shown = cauce(["show", job_id], cauce_env).stdout
    assert "worker-1  loss    9" in shown


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_checkpoint(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: resume
        command: {py("trainer.py", "--epochs", 4, "--out", out, "--crash-epoch", 2)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 2, backoff: 0.2}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worker-0 failed first (killed by SIGKILL" in done.stderr
    log = _log(out, "worker-0")
    assert log[0] == {"attempt": 0, "resumed_from": 0}
    restarted = log.index({"attempt": 1, "resumed_from": 2})
    epochs = [e["epoch"] for e in log if "epoch" in e]
    # attempt 0 finished epochs 0 and 1; attempt 1 did 2 and 3: the configured 4, once each
    assert epochs == [0, 1, 2, 3], log
    assert all(e["attempt"] == 1 for e in log[restarted + 1 :])
    # same result as an uninterrupted run
    expected = 1.0 - 0.9 ** (4 * 5)
    assert abs(float(log[-1]["weight"]) - expected) < 1e-9  # type: ignore[arg-type]
    job_id = done.stderr.split("job ", 1)[1].split(":", 1)[0]
    assert "attempts:  2 (restarts: 1)" in cauce(["show", job_id], cauce_env).stdout


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_resumes_from_the_one_before(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: corrupt
        command: {py("trainer.py", "--epochs", 4, "--out", out, "--corrupt-epoch", 2)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 1, backoff: 0.2}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "step-000000002 cannot be read" in done.stdout + done.stderr
    log = _log(out, "worker-0")
    # attempt 0 saved epochs 0, 1 and 2 (then damaged 2): attempt 1 resumes after epoch 1
    assert {"attempt": 1, "resumed_from": 2} in log
    epochs = [(e["attempt"], e["epoch"]) for e in log if "epoch" in e]
    assert epochs[-2:] == [(1, 2), (1, 3)], log
    expected = 1.0 - 0.9 ** (4 * 5)
    assert abs(float(log[-1]["weight"]) - expected) < 1e-9  # type: ignore[arg-type]


def test_hung_task_is_stopped_and_reported(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: hangs
        command: {py("trainer.py", "--epochs", 3, "--out", out, "--hang-after-epoch", 0)}
        hang_timeout: 2
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 1
    assert "worker-0 hung first (no report or heartbeat for" in done.stderr
    assert "hang_timeout 2 s" in done.stderr


def test_hang_report_names_the_stopped_task(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    """Rank 1 stops itself (SIGSTOP) after a few reports; rank 0 waits for it and reports
    nothing, so its hang timeout passes first: the root cause names worker-1, the stopped one.
    The stopped process is still stopped at teardown, and no process is left. (hang_timeout 5:
    rank 1 must have started, reported and stopped itself by then, which on a busy host can take
    more than 2 s; else neither rank is stopped when rank 0's timeout passes.)"""
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: stops
        command: {py("stop_rank.py", out, 1)}
        roles:
          worker: {{instances: 2}}
        hang_timeout: 5
        grace_period: 30
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "worker-1: stopping myself" in done.stdout
    assert "worker-1 was stopped first (process state T, as after SIGSTOP; no report" in (
        done.stderr
    )
    assert "worker-0 hung first" not in done.stderr
    pids = [int((out / f"worker-{rank}.pid").read_text()) for rank in (0, 1)]
    assert gone(pids, within=5.0), "a task outlived its job"
    # the stopped rank got SIGTERM once continued (SIGCONT), not SIGKILL after its grace period
    [run] = (Path(cauce_env["CAUCE_HOME"]) / "runs").iterdir()
    shown = cauce(["show", run.name], cauce_env).stdout
    assert re.search(r"^worker-1 +1 +\d+ +- +stopped +-15 ", shown, re.MULTILINE), shown


def test_report_raises_trial_pruned_once_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cauce.runtime import _report

    control = tmp_path / "control"
    monkeypatch.setenv("CAUCE_PROGRESS_FILE", str(tmp_path / "progress.jsonl"))
    monkeypatch.setenv("CAUCE_CONTROL_FILE", str(control))
    monkeypatch.setattr(_report, "_channel", _report._Channel())
    api.report(0, loss=1.0)
    control.write_text("pruned at step 0\n")
    _report._channel.next_check = 0.0
    with pytest.raises(api.TrialPruned) as info:
        api.report(1, loss=0.5)
    assert info.value.code == 0 and info.value.reason == "pruned at step 0"
    lines = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert [json.loads(line)["s"] for line in lines] == [0, 1]
    _report._channel.file.close()  # type: ignore[union-attr]
