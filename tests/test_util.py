"""The private helpers of cauce._util, with real files, processes and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cauce._util.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    swap_dir,
)
from cauce._util.locks import FileLock, read_holder_pid
from cauce._util.procs import ProcStat, all_pids, proc_stat, start_time
from cauce._util.pycommand import PythonCommand, python_command
from cauce._util.signals import handle_signals
from cauce._util.yamlfile import load_yaml_file, load_yaml_text
from cauce.errors import SpecError
from cauce.spec import parse_job

# -- files -----------------------------------------------------------------------------------


def test_atomic_write_bytes_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_atomic_write_text_and_json(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_bytes() == "héllo".encode()
    atomic_write_json(str(tmp_path / "j.json"), {"b": 1, "a": "é"}, sort_keys=True)
    text = (tmp_path / "j.json").read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') and "é" in text
    assert json.loads(text) == {"a": "é", "b": 1}
    atomic_write_json(tmp_path / "k.json", [1, 2], indent=None)
    assert (tmp_path / "k.json").read_text() == "[1, 2]\n"


def test_atomic_write_removes_the_temp_on_error(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "x").mkdir()  # os.replace of a file over a non-empty folder fails
    (folder / "x" / "inside").write_text("keep")
    with pytest.raises(OSError):
        atomic_write_bytes(folder / "x", b"data")
    assert sorted(p.name for p in folder.iterdir()) == ["x"]
    with pytest.raises(TypeError):  # an error while writing, not only while renaming
        atomic_write_bytes(folder / "y", "not bytes")  # type: ignore[arg-type]
    assert sorted(p.name for p in folder.iterdir()) == ["x"]


def test_atomic_write_is_never_seen_half_written(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write_bytes(target, b"a" * 100_000)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            seen.add(bytes([len(data) // 1000, len(set(data))]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(50):
            atomic_write_bytes(target, (b"a" if i % 2 else b"b") * 100_000)
    finally:
        stop.set()
        reader.join()
    assert seen and all(s == bytes([100, 1]) for s in seen)  # whole versions only


def test_fsync_dir_tolerates_missing(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # no error: best effort


def test_swap_dir_publishes_and_replaces(tmp_path: Path) -> None:
    final = tmp_path / "model"
    tmp = tmp_path / ".tmp-1"
    tmp.mkdir()
    (tmp / "a").write_text("1")
    swap_dir(tmp, final)
    assert (final / "a").read_text() == "1" and not tmp.exists()
    tmp2 = tmp_path / ".tmp-2"
    tmp2.mkdir()
    (tmp2 / "b").write_text("2")
    swap_dir(tmp2, final)
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old one removed


def test_swap_dir_puts_the_old_back_when_the_rename_fails(tmp_path: Path) -> None:
    final = tmp_path / "model"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(OSError):
        swap_dir(tmp_path / "never-written", final)
    assert (final / "old").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# -- locks -----------------------------------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    from cauce._util.locks import FileLock
    lock = FileLock.try_acquire(sys.argv[1], write_pid=True)
    print("held" if lock else "busy", flush=True)
    sys.stdin.read()
    """
)


def _holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_file_lock_is_exclusive_across_processes_and_dropped_on_death(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    path.parent.mkdir()
    with _holder(path) as proc:
        try:
            assert FileLock.try_acquire(path) is None
            assert read_holder_pid(path) == proc.pid
        finally:
            proc.kill()
            proc.wait()
    lock = FileLock.try_acquire(path)  # the kernel dropped the dead holder's lock
    assert lock is not None and lock.fd >= 0
    lock.release()
    lock.release()  # idempotent
    assert lock.fd == -1


def test_file_lock_context_manager_and_release(tmp_path: Path) -> None:
    path = tmp_path / "y.lock"
    with FileLock.try_acquire(path, write_pid=True) as lock:  # type: ignore[union-attr]
        assert read_holder_pid(path) == os.getpid()
        # flock locks belong to the open file: a second open in this process is refused too
        assert FileLock.try_acquire(path) is None
        assert lock.fd >= 0
    assert lock.fd == -1
    again = FileLock.try_acquire(path)
    assert again is not None
    again.release()


def test_file_lock_wait_waits_for_the_holder_and_leaves_the_file_as_it_is(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"as it was\0")
    held = FileLock.try_acquire(path)
    assert held is not None
    got: list[float] = []
    waiter = threading.Thread(target=lambda: got.append(_waited(path)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not got  # still waiting for the holder
    held.release()
    waiter.join(10)
    assert got and path.read_bytes() == b"as it was\0"
    with FileLock.wait(tmp_path):  # a folder too, apart from the files in it
        inside = FileLock.try_acquire(path)
        assert inside is not None
        inside.release()
    with pytest.raises(FileNotFoundError):
        FileLock.wait(tmp_path / "missing")  # never created


def _waited(path: Path) -> float:
    with FileLock.wait(path) as lock:
        assert lock.fd >= 0
        return time.monotonic()


def test_read_holder_pid_without_pid(tmp_path: Path) -> None:
    assert read_holder_pid(tmp_path / "missing") is None
    (tmp_path / "text").write_text("job-1 on host\n")
    assert read_holder_pid(tmp_path / "text") is None
    lock = FileLock.try_acquire(tmp_path / "empty")
    assert lock is not None
    assert read_holder_pid(tmp_path / "empty") is None
    lock.release()


# -- signals ---------------------------------------------------------------------------------


def test_handle_signals_calls_the_handler_and_restores() -> None:
    got: list[int] = []
    before = signal.getsignal(signal.SIGUSR1)
    with handle_signals([signal.SIGUSR1, signal.SIGUSR2], got.append):
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # let pending handlers run
    assert got == [signal.SIGUSR1, signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR1) == before


def test_handle_signals_restores_after_an_exception() -> None:
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with pytest.raises(RuntimeError), handle_signals([signal.SIGUSR1], lambda s: None):
            assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_IGN, previous)
            raise RuntimeError("boom")
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_handle_signals_is_a_no_op_outside_the_main_thread() -> None:
    errors: list[BaseException] = []
    before = signal.getsignal(signal.SIGUSR1)

    def body() -> None:
        try:
            with handle_signals([signal.SIGUSR1], lambda s: None):
                assert signal.getsignal(signal.SIGUSR1) == before
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert not errors


# -- procs -----------------------------------------------------------------------------------


def _wait_for_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + 20  # a loaded machine can hold a process in "D" for seconds
    while time.monotonic() < deadline:
        got = proc_stat(pid)
        if got is not None and got.state == state:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"process {pid} is not in state {state}: {proc_stat(pid)}")


def test_proc_stat_of_a_process_with_parentheses_and_spaces_in_its_name(tmp_path: Path) -> None:
    # comm is the file name of the executable: give it spaces and a ")"
    exe = tmp_path / "a b) (c"
    os.symlink("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "30"], start_new_session=True)
    try:
        # sleeping, once exec has loaded it (it is "D" for a moment before, on a loaded disk)
        _wait_for_state(proc.pid, "S")
        stat = proc_stat(proc.pid)
        assert stat is not None
        assert stat == ProcStat(
            pid=proc.pid,
            comm="a b) (c",
            state=stat.state,
            ppid=os.getpid(),
            pgid=proc.pid,
            start_ticks=stat.start_ticks,
            cpu_ticks=stat.cpu_ticks,
        )
        assert stat.state == "S"
        assert start_time(proc.pid) == stat.start_ticks
        assert stat.start_ticks >= (start_time(os.getpid()) or 0)
        assert proc.pid in all_pids() and os.getpid() in all_pids()
        os.kill(proc.pid, signal.SIGSTOP)
        _wait_for_state(proc.pid, "T")
    finally:
        proc.kill()
        proc.wait()
    assert proc_stat(proc.pid) is None and start_time(proc.pid) is None


def test_a_zombie_has_no_start_time() -> None:
    """A driver that exited but is not reaped yet is gone for driver_alive."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert start_time(proc.pid) is not None
        proc.kill()
        _wait_for_state(proc.pid, "Z")
        assert start_time(proc.pid) is None
    finally:
        proc.kill()
        proc.wait()


def test_proc_stat_counts_cpu_time() -> None:
    me = proc_stat(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.state == "R"
    x = 0
    for i in range(3_000_000):
        x += i
    later = proc_stat(os.getpid())
    assert later is not None and later.cpu_ticks > me.cpu_ticks


# -- yaml ------------------------------------------------------------------------------------


def test_load_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("a: 1\nb: [x, y]\n")
    assert load_yaml_file(path, what="job file") == {"a": 1, "b": ["x", "y"]}
    with pytest.raises(SpecError, match=r"^job file '.*missing.yaml' does not exist$"):
        load_yaml_file(tmp_path / "missing.yaml", what="job file")
    with pytest.raises(SpecError, match=r"^tune file '.*' cannot be read: Is a directory$"):
        load_yaml_file(tmp_path, what="tune file")


def test_load_yaml_text_syntax_error_is_one_line() -> None:
    with pytest.raises(SpecError) as info:
        load_yaml_text("a: [1, 2\nb: 3\n", source="x.yaml")
    message = str(info.value)
    assert message.startswith("x.yaml: is not valid YAML at line ")
    assert "\n" not in message and info.value.exit_code == 2


@pytest.mark.parametrize("libyaml", [True, False])
def test_numbers_in_exponent_form_are_numbers(libyaml: bool) -> None:
    """YAML 1.1 reads 1e-4 as a string; spec files read it as YAML 1.2 does, a float (with C
    and Python parsers alike); what is not quite a number stays a string."""
    from cauce._util import yamlfile

    text = "a: 1e-4\nb: 1e3\nc: -2.5E+2\nd: 1.0e-4\ne: .5e1\nf: 1e\ng: e5\nh: '1e3'\ni: 7\n"
    assert yamlfile._parse(text, "f.yaml", yamlfile._loader_class(libyaml)) == {
        "a": 0.0001,
        "b": 1000.0,
        "c": -250.0,
        "d": 0.0001,
        "e": 5.0,
        "f": "1e",
        "g": "e5",
        "h": "1e3",
        "i": 7,
    }
    spec = parse_job(
        load_yaml_text(
            "command: python t.py\ntimeout: 1e3\ntune:\n  objective: {metric: l, direction: min}"
            "\n  space: {lr: {type: loguniform, low: 1e-4, high: 1e-1}}\n",
            source="job.yaml",
        )
    )
    assert spec.timeout == 1000.0 and spec.tune is not None
    assert (spec.tune.param("lr").low, spec.tune.param("lr").high) == (0.0001, 0.1)


# -- remote ----------------------------------------------------------------------------------


def test_is_uri_and_url_to_fs() -> None:
    from cauce._util.remote import is_uri, url_to_fs

    assert is_uri("s3://bucket/key") and is_uri("memory://a/b")
    assert not is_uri("file:///tmp/x") and not is_uri("/tmp/x") and not is_uri(Path("/tmp"))
    fs, path = url_to_fs("memory://cauce-test/folder/")
    assert path == "/cauce-test/folder" and "memory" in fs.protocol


def test_one_line_keeps_the_message_and_drops_the_rest() -> None:
    from cauce._util.text import one_line

    # DuckDB's echo of the query after a blank line, a terminal colour, a binary byte, a newline
    raw = "Parser Error: syntax error\x1b[31m at\x00 or near\n  'x'\n\nLINE 1: SELEC * FROM d"
    assert one_line(raw) == "Parser Error: syntax error at or near 'x'"
    assert one_line(ValueError("a\tb")) == "a b"
    assert one_line("x" * 400) == "x" * 297 + "..." and len(one_line("y" * 50, 20)) == 20
    assert one_line("") == ""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["python", "train.py", "-x"], PythonCommand("python", "script", "train.py", ("-x",))),
        (
            ["/venv/bin/python3.11", "-u", "-m", "pkg.mod", "a"],
            PythonCommand("/venv/bin/python3.11", "module", "pkg.mod", ("a",), unbuffered=True),
        ),
        (["python", "-c", "print(1)"], None),
        (["python", "-O", "train.py"], None),
        (["python", "-m"], None),
        (["python"], None),
        (["pythonw", "train.py"], None),
        (["torchrun", "train.py"], None),
        ([], None),
    ],
)
def test_python_command_reads_the_forms_a_warm_start_runs(
    argv: list[str], expected: PythonCommand | None
) -> None:
    assert python_command(argv) == expected
