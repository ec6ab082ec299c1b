"""The reaper's scratch folders: removed once the tasks are gone, also when the process that
made them was killed with SIGKILL (a Spark task's Python worker that Spark kills, a pipeline
killed during its serve step)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cauce.cluster import Reaper
from cauce.cluster._reaper import group_alive

_OWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    from cauce.cluster import Reaper
    reaper = Reaper(grace=1.0)
    reaper.scratch(sys.argv[1])
    task = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    reaper.watch(task.pid)
    print(task.pid, flush=True)
    time.sleep(60)
    """
)


def _gone(path: Path, within: float) -> bool:
    deadline = time.monotonic() + within
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def test_scratch_folder_of_a_killed_owner_is_removed_once_its_task_is_gone(
    tmp_path: Path,
) -> None:
    # A path longer than the reaper's messages used to be (64 bytes), with a space in it.
    folder = tmp_path / ("scratch of a task " + "x" * 80)
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "progress.jsonl").write_text("{}\n")
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    task = int(owner.stdout.readline())
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    owner.stdout.close()
    assert _gone(folder, within=15), "the reaper did not remove the killed owner's folder"
    if group_alive(task):  # pragma: no cover - the failure's cleanup
        os.killpg(task, signal.SIGKILL)
        raise AssertionError("the task outlived its owner's reaper")


def test_a_folder_the_owner_removed_itself_is_no_error(tmp_path: Path) -> None:
    folder = tmp_path / "scratch"
    folder.mkdir()
    beside = tmp_path / "kept"
    beside.mkdir()
    reaper = Reaper(grace=1.0)
    reaper.scratch(folder)
    folder.rmdir()
    reaper.close()
    assert not folder.exists()
    assert beside.exists(), "only the folder named is removed"
