"""Checkpoints written off the training thread: snapshots, order, errors kept, atomic on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cauce.runtime import checkpoint
from cauce.runtime.checkpoint import CheckpointError


@pytest.fixture(autouse=True)
def chief(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAUCE_RANK", raising=False)
    monkeypatch.delenv("RANK", raising=False)


def test_background_saves_snapshot_the_state_and_keep_order(tmp_path: Path) -> None:
    state = {"w": [0, 0, 0]}
    for step in range(4):
        state["w"][step % 3] = step + 1
        path = checkpoint.save(state, step, keep=2, directory=tmp_path, background=True)
        assert path == tmp_path / f"step-{step:09d}"
        state["w"][0] = -99  # changed at once: the checkpoint has the state of the call
    checkpoint.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002", "step-000000003"]
    latest = checkpoint.load(directory=tmp_path)
    assert latest is not None and latest.step == 3 and latest.state == {"w": [4, 2, 3]}
    assert checkpoint.load(step=2, directory=tmp_path).state == {"w": [-99, 2, 3]}  # type: ignore[union-attr]


@pytest.mark.parametrize("background", [False, True])
def test_a_state_that_cannot_be_serialised_is_named_and_leaves_nothing(
    tmp_path: Path, background: bool
) -> None:
    checkpoint.save({"w": 1}, 0, directory=tmp_path)
    with pytest.raises(CheckpointError, match=r"cannot be serialised .*save plain data"):
        checkpoint.save({"f": lambda: 1}, 1, directory=tmp_path, background=background)
    checkpoint.wait()  # nothing in flight, nothing kept to raise
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000000"]
    latest = checkpoint.load(directory=tmp_path)
    assert latest is not None and (latest.step, latest.state) == (0, {"w": 1})


def test_a_failed_background_write_is_raised_once(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the checkpoint folder should be")
    # save() returns at once; the folder is made, and fails, on the writer thread
    assert checkpoint.save({"w": 1}, 1, directory=blocked, background=True) is not None
    with pytest.raises(CheckpointError, match="not-a-folder"):
        checkpoint.wait()
    checkpoint.wait()  # raised once, then gone
    checkpoint.save({"w": 2}, 2, directory=blocked, background=True)
    with pytest.raises(CheckpointError, match="not-a-folder"):  # or at the next save
        checkpoint.save({"w": 3}, 3, directory=tmp_path / "ok")
    assert not (tmp_path / "ok").exists(), "the save that raised wrote nothing"
    checkpoint.save({"w": 3}, 3, directory=tmp_path / "ok", background=True)
    checkpoint.wait()
    assert checkpoint.load(directory=tmp_path / "ok").state == {"w": 3}  # type: ignore[union-attr]


WRITER = """
import sys
from cauce.runtime import checkpoint
folder, size = sys.argv[1], int(sys.argv[2])
checkpoint.save({"w": 0}, 0, directory=folder)
checkpoint.save({"w": bytes(size)}, 1, directory=folder, background=True)
print("returned", flush=True)
if sys.argv[3] == "exit":
    raise SystemExit(0)  # the interpreter waits for the write before it goes
import time
time.sleep(60)
"""


def test_sigkill_mid_background_write_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    """SIGKILL as soon as the writer thread has started: step 0, or step 1 whole; then a
    process that exits right after a background save leaves its checkpoint complete."""
    code = textwrap.dedent(WRITER)
    size = 200_000_000
    argv = [sys.executable, "-c", code, str(tmp_path), str(size), "kill"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "returned"  # while the thread writes
    for _ in range(2000):
        if any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()):
            break
        os.sched_yield()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    latest = checkpoint.load(directory=tmp_path)
    assert latest is not None
    if latest.step == 1:  # the write finished before the signal came
        assert latest.state == {"w": bytes(size)}
    else:
        assert (latest.step, latest.state) == (0, {"w": 0})
        assert not (tmp_path / "step-000000001").exists()
    # A process that leaves at once: its last background checkpoint is there, whole.
    out = tmp_path / "exit"
    done = subprocess.run([*argv[:3], str(out), "1000000", "exit"], check=True, timeout=60)
    assert done.returncode == 0
    last = checkpoint.load(directory=out)
    assert last is not None and last.step == 1 and last.state == {"w": bytes(1_000_000)}
