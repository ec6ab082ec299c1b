"""Warm starts (``preload:``): a job's Python tasks forked from a process that imported the listed
modules once. Real processes throughout: what a task sees is what ``python SCRIPT`` would give
it, its end is reported as its own, and nothing outlives the job, even when the driver or the
warm-start process is killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from cauce._util.pycommand import python_command
from cauce.cluster._warm import WarmStartError, WarmStarts
from cauce.cluster.api import TaskLaunch
from helpers import cauce, cauce_popen, gone, running, write_job
from pipeline_fixtures import write_small

# Imported once, in the warm-start process: records that process's pid.
HEAVY = """
import os
IMPORTED_IN = os.getpid()
"""

# What a task sees, written to out/<rank>.json; its end (atexit, a non-daemon thread) to files.
SEES = """
import atexit, json, os, sys, threading, time
import numpy as np
import heavy

rank = os.environ["RANK"]
seen = {
    "name": __name__,
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "path0": sys.path[0],
    "mark": os.environ.get("MARK"),
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "imported_in": heavy.IMPORTED_IN,
    "random": int(np.random.randint(1 << 30)),
    "stdin": sys.stdin.read(),
}
with open(f"out/{rank}.json", "w") as f:
    json.dump(seen, f)
atexit.register(lambda: open(f"out/{rank}.atexit", "w").close())

def late():
    time.sleep(0.3)
    open(f"out/{rank}.thread", "w").close()

threading.Thread(target=late).start()
print(f"stdout of rank {rank}")
print(f"stderr of rank {rank}", file=sys.stderr)
"""


def _job(folder: Path, command: str, preload: str = "[numpy, heavy]", extra: str = "") -> Path:
    (folder / "heavy.py").write_text(HEAVY, encoding="utf-8")
    (folder / "out").mkdir(exist_ok=True)
    return write_job(
        folder,
        f"""
        name: warm
        framework: pytorch
        command: {command}
        preload: {preload}
        env: {{MARK: here}}
        grace_period: 2
        roles:
          worker: {{instances: 2, resources: {{cpus: 0.5}}}}
        {extra}
        """,
    )


def test_a_warm_task_sees_what_python_would_give_it(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    (tmp_path / "sees.py").write_text(SEES, encoding="utf-8")
    # numpy.random itself: NumPy 2 imports it on first use, and seeds it then
    path = _job(tmp_path, "python sees.py --flag 'a b'", preload="[numpy.random, heavy]")
    done = cauce(["run", str(path)], cauce_env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = [json.loads((tmp_path / "out" / f"{r}.json").read_text()) for r in (0, 1)]
    for seen in ranks:
        assert seen["name"] == "__main__"
        assert seen["argv"] == ["sees.py", "--flag", "a b"]
        assert seen["cwd"] == str(tmp_path)
        assert seen["path0"] == os.path.realpath(tmp_path)
        assert seen["mark"] == "here"
        assert seen["stdin"] == ""  # /dev/null
        assert seen["pgid"] == seen["pid"]  # its own process group, as every task
        # imported once, before the fork: not in the task itself
        assert seen["imported_in"] == ranks[0]["imported_in"] != seen["pid"]
    assert ranks[0]["random"] != ranks[1]["random"]  # NumPy seeded anew in each task
    for rank in (0, 1):  # ended as an interpreter ends: threads joined, atexit run
        assert (tmp_path / "out" / f"{rank}.thread").exists()
        assert (tmp_path / "out" / f"{rank}.atexit").exists()
        assert f"[worker-{rank}] stdout of rank {rank}" in done.stdout
        assert f"[worker-{rank}] stderr of rank {rank}" in done.stdout
    zygote = ranks[0]["imported_in"]
    assert gone([zygote, *(seen["pid"] for seen in ranks)])


def test_each_warm_task_takes_its_own_torch_thread_count(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """torch reads OMP_NUM_THREADS once, when the warm-start process imports it: the first
    task's. Two roles of one job ask for 1 and 3 threads; each task must get its own."""
    (tmp_path / "threads.py").write_text(
        "import os, pathlib, torch\n"
        "role = os.environ['CAUCE_ROLE']\n"
        "pathlib.Path(role).write_text(str(torch.get_num_threads()))\n",
        encoding="utf-8",
    )
    path = write_job(
        tmp_path,
        """
        name: threads
        command: python threads.py
        preload: [torch]
        roles:
          one: {instances: 1, resources: {cpus: 0.5}, env: {OMP_NUM_THREADS: 1}}
          three: {instances: 1, resources: {cpus: 0.5}, env: {OMP_NUM_THREADS: 3}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "one").read_text() == "1"
    assert (tmp_path / "three").read_text() == "3"


@pytest.mark.parametrize(
    ("body", "command", "expected"),
    [
        ("import sys; sys.exit(3)", "python task.py", "exit 3"),
        ("raise ValueError('boom')", "python task.py", "exit 1"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "python task.py",
            "killed by SIGKILL",
        ),
        ("raise ValueError('boom')", "python -m task", "exit 1"),
    ],
    ids=["exit-code", "exception", "signal", "module"],
)
def test_a_warm_task_ends_with_its_own_status(
    tmp_path: Path, cauce_env: dict[str, str], body: str, command: str, expected: str
) -> None:
    (tmp_path / "task.py").write_text(
        "import os\nif os.environ['RANK'] == '1':\n    " + body + "\n", encoding="utf-8"
    )
    path = _job(tmp_path, command)
    done = cauce(["run", str(path)], cauce_env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"worker-1 failed first ({expected} after" in done.stderr, done.stderr
    if "ValueError" in body:
        log = next((Path(cauce_env["CAUCE_HOME"]) / "runs").glob("warm-*/logs/worker-1.log"))
        text = log.read_text()
        assert "ValueError: boom" in text
        assert "_zygote" not in text  # the traceback is the task's, as python prints it


def _hangs(tmp_path: Path, cauce_env: dict[str, str], rank1: str) -> str:
    """Runs a job whose rank 1 runs ``rank1`` (Python, indented 4) and never beats while rank 0
    goes on beating, with ``hang_timeout: 4``; returns the error it ends with."""
    script = f"""
import os, threading, time
import cauce

if os.environ["RANK"] == "1":
{rank1}
for _ in range(600):
    cauce.heartbeat()
    time.sleep(0.2)
"""
    (tmp_path / "task.py").write_text(script, encoding="utf-8")
    path = _job(tmp_path, "python task.py", extra="hang_timeout: 4")
    done = cauce(["run", str(path)], cauce_env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "worker-1 hung first" in done.stderr, done.stderr
    return done.stderr


def test_a_hung_warm_task_shows_its_stacks_in_its_log_before_it_is_stopped(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """Rank 1 blocks in a function of its own, in a thread beside its main one; rank 0 goes on
    beating. Found hung, rank 1 prints where each of its threads is, which the error quotes."""
    error = _hangs(
        tmp_path,
        cauce_env,
        "    def waits_for_a_peer_that_never_answers():\n"
        "        time.sleep(600)\n"
        "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
        "    waits_for_a_peer_that_never_answers()",
    )
    assert "waits_for_a_peer_that_never_answers" in error  # the log's last lines, quoted
    assert "teardown hang" not in error  # blocked in a function: not that signature
    log = next((Path(cauce_env["CAUCE_HOME"]) / "runs").glob("warm-*/logs/worker-1.log"))
    text = log.read_text()
    assert "Current thread 0x" in text and text.count("hread 0x") == 2, text  # both threads
    assert 'File "' in text and "task.py" in text


def test_a_hang_with_the_ddp_teardown_signature_is_named_as_such(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """The stacks of PyTorch's DDP teardown hang, made without torch: rank 1's main thread is
    at its script's top level, blocked in a C call that keeps the GIL, and a native thread
    (started from C) waits for the GIL with no Python frame. The root cause names the hang."""
    error = _hangs(
        tmp_path,
        cauce_env,
        "    import ctypes\n"
        "    libc = ctypes.PyDLL(None)  # its calls keep the GIL\n"
        "    native = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(lambda _: None)\n"
        "    libc.pthread_create(ctypes.byref(ctypes.c_ulong()), None, native, None)\n"
        "    libc.sleep(600)",
    )
    assert "PyTorch's DDP teardown hang" in error, error
    assert "<no Python frame>" in error and "in <module>" in error


def test_a_module_that_cannot_be_preloaded_fails_the_job_naming_it(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    (tmp_path / "task.py").write_text("print('never')\n", encoding="utf-8")
    path = _job(tmp_path, "python task.py", preload="[numpy, no_such_module_here]")
    done = cauce(["run", str(path)], cauce_env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no_such_module_here: ModuleNotFoundError" in done.stderr
    assert "preload" in done.stderr
    assert "never" not in done.stdout


@pytest.mark.parametrize(
    ("command", "preload", "expected"),
    [
        ("sh -c 'echo hi'", "[numpy]", "which preload cannot start warm"),
        ("python -c 'print(1)'", "[numpy]", "which preload cannot start warm"),
        ("python task.py", "numpy", "preload must be a list of module names"),
        ("python task.py", "['numpy', 'not a module']", "preload[1] must be a module name"),
    ],
)
def test_a_job_that_cannot_start_warm_is_refused_before_it_starts(
    tmp_path: Path, cauce_env: dict[str, str], command: str, preload: str, expected: str
) -> None:
    path = _job(tmp_path, json.dumps(command), preload=preload)
    done = cauce(["run", str(path)], cauce_env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr
    assert not (Path(cauce_env["CAUCE_HOME"]) / "runs").exists()


# A task that says where it is, then waits to be stopped.
WAITS = """
import json, os, time
import heavy
with open(f"out/{os.environ['RANK']}.json", "w") as f:
    json.dump({"pid": os.getpid(), "imported_in": heavy.IMPORTED_IN}, f)
time.sleep(120)
"""


def _started(
    folder: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[str], list[dict[str, int]]]:
    """A job of WAITS, started; its driver and, once both tasks run, what they wrote."""
    (folder / "waits.py").write_text(WAITS, encoding="utf-8")
    driver = cauce_popen(["run", str(_job(folder, "python waits.py"))], env)
    deadline = time.monotonic() + 60
    files = [folder / "out" / f"{rank}.json" for rank in (0, 1)]
    while not all(f.exists() and f.stat().st_size for f in files):
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            out, err = driver.communicate()
            raise AssertionError(f"the tasks did not start:\n{out}\n{err}")
        time.sleep(0.1)
    return driver, [json.loads(f.read_text()) for f in files]


def test_a_killed_warm_start_process_fails_the_job_and_stops_its_tasks(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    driver, tasks = _started(tmp_path, cauce_env)
    os.kill(tasks[0]["imported_in"], signal.SIGKILL)
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 1, out + err
    assert "failed first (killed by SIGKILL" in err, err
    assert gone([t["pid"] for t in tasks])


def test_kill_9_of_the_driver_leaves_no_warm_task_nor_warm_start_process(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    driver, tasks = _started(tmp_path, cauce_env)
    assert running(tasks[0]["imported_in"])
    driver.kill()
    driver.communicate()
    # the reaper stops the tasks after the grace period; the warm-start process sees its
    # driver gone and exits
    assert gone([tasks[0]["imported_in"], *(t["pid"] for t in tasks)], within=30)


TRIAL = """
import json, os
import heavy
import cauce
with open(f"out/{os.getpid()}.json", "w") as f:
    json.dump({"pid": os.getpid(), "imported_in": heavy.IMPORTED_IN}, f)
cauce.report(0, loss=float(cauce.context().params["x"]))
"""


#: A study of TRIAL, 2 at a time: ``trials`` is set where it is used.
TUNE = """tune:
          objective: {metric: loss, direction: min}
          space:
            x: {type: uniform, low: 0, high: 1}
          parallel: 2
          sampler: {type: random, seed: 0}
          pruner: none"""


def _forked_from_one_process(folder: Path, tasks: int) -> None:
    """``tasks`` tasks of TRIAL ran, all forked from one warm-start process, and none of those
    processes is left."""
    seen = [json.loads(p.read_text()) for p in (folder / "out").glob("*.json")]
    assert len(seen) == tasks
    zygotes = {s["imported_in"] for s in seen}
    assert len(zygotes) == 1, seen
    assert not zygotes & {s["pid"] for s in seen}
    assert gone([*zygotes, *(s["pid"] for s in seen)])


def test_the_trials_of_a_study_fork_from_one_warm_start_process(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    (tmp_path / "trial.py").write_text(TRIAL, encoding="utf-8")
    path = _job(tmp_path, "python trial.py", preload="[heavy, cauce]", extra=TUNE)
    done = cauce(["tune", str(path), "--trials", "4"], cauce_env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    _forked_from_one_process(tmp_path, 8)  # 4 trials of 2 ranks


def test_a_pipelines_job_steps_fork_from_the_study_s_warm_start_process(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """A pipeline keeps its warm-start processes for all its steps: the training step's tasks
    fork from the one that the study before it started (its imports are not paid again), and
    it is gone when the pipeline ends."""
    (tmp_path / "trial.py").write_text(TRIAL, encoding="utf-8")
    _job(tmp_path, "python trial.py", preload="[heavy, cauce]", extra=TUNE)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """
            name: shared
            steps:
              tune: {job: job.yaml, trials: 2, parallel: 1}
              train: {job: job.yaml, params: "${steps.tune.best.params}"}
            """
        ),
        encoding="utf-8",
    )
    done = cauce(["run", str(pipeline)], cauce_env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    _forked_from_one_process(tmp_path, 6)  # 2 trials and the training job, 2 ranks each


def test_a_pipeline_starts_the_next_job_steps_warm_start_process_early(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """While a step runs, the warm-start process of the job step after it imports its modules:
    they are imported before the first step has ended; again when forced."""
    (tmp_path / "heavy.py").write_text(
        "import time\nIMPORTED_AT = time.time()\nopen('imports', 'a').write('heavy\\n')\n"
    )
    (tmp_path / "seen").mkdir()
    (tmp_path / "first.py").write_text(
        "import time\ntime.sleep(5)\nopen('first.done', 'w').write(repr(time.time()))\n"
    )
    (tmp_path / "second.py").write_text(
        "import heavy, os\nopen(f'seen/{os.getpid()}', 'w').write(repr(heavy.IMPORTED_AT))\n"
    )
    write_job(tmp_path, "name: first\ncommand: python first.py\n", "first.yaml")
    write_job(
        tmp_path,
        "name: second\ncommand: python second.py\npreload: [heavy]\n"
        "roles: {worker: {instances: 2, resources: {cpus: 0.5}}}\n",
        "second.yaml",
    )
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "name: early\nsteps:\n  first: {kind: run, job: first.yaml}\n"
        "  second: {kind: run, job: second.yaml}\n"
    )
    done = cauce(["run", str(pipeline)], cauce_env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    first_done = float((tmp_path / "first.done").read_text())
    imported = {float(p.read_text()) for p in (tmp_path / "seen").iterdir()}
    assert len(imported) == 1  # both ranks forked from one process
    assert imported.pop() < first_done
    again = cauce(["run", str(pipeline), "--force", "first"], cauce_env, timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "imports").read_text() == "heavy\nheavy\n"


def test_a_job_step_that_may_be_up_to_date_is_not_started_early(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """The prepare step runs each time (it keeps its own cache); the job steps after it, up to
    date on the second run, get no warm-start process: nothing is imported for them."""
    pipeline = write_small(tmp_path)
    (tmp_path / "heavy.py").write_text("open('imports', 'a').write('heavy\\n')\n")
    job = tmp_path / "job.yaml"
    job.write_text(job.read_text() + "preload: [heavy]\n")
    for _ in range(2):
        done = cauce(["run", str(pipeline)], cauce_env, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "3 steps, 0 ran, 3 up to date" in done.stdout, done.stdout
    assert (tmp_path / "imports").read_text() == "heavy\n"  # the first run's, shared


# Blocks its importer until the file ``release`` appears beside it (at most a minute).
BLOCKS = """
import os, time
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(os.path.dirname(__file__), "release")):
    if time.monotonic() > deadline:
        raise SystemExit("never released")
    time.sleep(0.05)
"""


def _launch(folder: Path, module: str, source: str) -> TaskLaunch:
    folder.mkdir()
    (folder / f"{module}.py").write_text(source, encoding="utf-8")
    (folder / "task.py").write_text(
        f"import os, {module}\nopen('ran', 'w').write(str(os.getppid()))\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k.startswith(("PATH", "PYTHON", "LANG"))}
    return TaskLaunch(
        "worker-0", ("python", "task.py"), env, str(folder), os.devnull, preload=(module,)
    )


def _ran(warm: WarmStarts, launch: TaskLaunch) -> int:
    """``launch``'s task forked from ``warm``, its exit status once it has ended."""
    task = warm.spawn(launch, python_command(launch.argv))  # type: ignore[arg-type]
    with task.stdout:
        task.stdout.read()
    return task.wait(timeout=30)


def test_a_zygote_that_imports_does_not_hold_up_the_tasks_of_another(tmp_path: Path) -> None:
    slow = _launch(tmp_path / "slow", "blocks", BLOCKS)
    fast = _launch(tmp_path / "fast", "quick", "X = 1\n")
    warm = WarmStarts()
    early = threading.Thread(target=warm.prestart, args=([slow],))
    try:
        early.start()
        time.sleep(0.5)  # the slow zygote's import has begun: it waits for "release"
        assert _ran(warm, fast) == 0
        assert (tmp_path / "fast" / "ran").exists()
        assert early.is_alive(), "the slow zygote finished its imports: the test proves nothing"
        (tmp_path / "slow" / "release").touch()
        early.join(timeout=60)
        assert _ran(warm, slow) == 0
    finally:
        (tmp_path / "slow" / "release").touch()
        early.join(timeout=60)
        warm.close()


def test_closing_while_a_zygote_imports_leaves_no_process(tmp_path: Path) -> None:
    slow = _launch(tmp_path / "slow", "blocks", BLOCKS)
    warm = WarmStarts()
    early = threading.Thread(target=warm.prestart, args=([slow],))
    early.start()
    deadline = time.monotonic() + 30
    while not (zygotes := _children_running("blocks")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert zygotes, "no zygote was importing"
    closer = threading.Thread(target=warm.close)
    closer.start()
    closer.join(timeout=1)
    assert closer.is_alive(), "close() returned while a zygote was still importing"
    (tmp_path / "slow" / "release").touch()
    closer.join(timeout=60)
    early.join(timeout=60)
    assert not closer.is_alive()
    assert gone(zygotes, within=5)
    with pytest.raises(WarmStartError, match="closed"):
        warm.spawn(slow, python_command(slow.argv))  # type: ignore[arg-type]


def _children_running(module: str) -> list[int]:
    """Pids of this process's children whose command line names ``module``."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if module in child.cmdline():
                found.append(child.pid)
    return found
