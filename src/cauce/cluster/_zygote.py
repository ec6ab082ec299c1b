"""The warm start of a job's Python tasks (``preload:`` in the job spec): a process that imports
the listed modules once, then forks a task for each request, so that no task pays those imports
(PySpark's Python daemon forks its workers for the same reason).

    python _zygote.py MODULE...      # run by path, with the task's interpreter

The driver (``_warm.py``) talks to it over a ``SOCK_SEQPACKET`` socket on its stdin, one JSON
message each way. Out: ``{"ready": true}`` once every module is imported, or ``{"error": ...}``
(then it exits). In, per task: ``{"id", "kind", "target", "args", "unbuffered", "cwd", "env"}``
with the write end of the task's output pipe attached; out: ``{"id", "pid"}`` once the task has
its own session, later ``{"pid", "exit"}`` (``subprocess``'s return code) when it ends. When the
socket closes (the driver is done, or was killed), it exits; tasks still running are the
reaper's, as every task is.

The forked task takes the request's working folder, environment, argv and ``sys.path[0]`` as
``python`` would give them, its own stdin (``/dev/null``), stdout and stderr (the pipe), and its
own session; NumPy's global random state is seeded anew and torch takes ``OMP_NUM_THREADS`` (both
were set up once in this process). It ends as an interpreter does (non-daemon threads joined,
``atexit`` handlers run, output flushed), then ``os._exit``: the teardown of every module is
skipped, which with torch loaded saves about half a second of a CPU.

Standard library only, and nothing of cauce: it runs in whatever interpreter the task names.
"""

import atexit
import builtins
import contextlib
import faulthandler
import importlib
import importlib.machinery
import io
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
import types
from collections.abc import Iterable, Mapping
from typing import Any

_MAX_MESSAGE = 1 << 20


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    channel.sendmsg([json.dumps(message).encode()])


def _stdio(env: Mapping[str, str], unbuffered: bool) -> None:
    """New ``sys.stdin``/``stdout``/``stderr`` on descriptors 0, 1 and 2, made as ``python``
    makes them for a task whose output is a pipe."""
    unbuffered = unbuffered or bool(env.get("PYTHONUNBUFFERED"))
    encoding, _, errors = (env.get("PYTHONIOENCODING") or "").partition(":")
    encoding = encoding or "utf-8"

    def writer(fd: int, fallback_errors: str, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(
            raw if unbuffered else io.BufferedWriter(raw),
            encoding=encoding,
            errors=errors or fallback_errors,
            line_buffering=line_buffering,
            write_through=unbuffered,
        )

    streams = {
        "stdin": io.TextIOWrapper(
            io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=encoding
        ),
        "stdout": writer(1, "strict", False),
        "stderr": writer(2, "backslashreplace", True),
    }
    for name, stream in streams.items():
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _fresh_state(env: Mapping[str, str]) -> None:
    """What a fresh interpreter would not share with its siblings, set anew."""
    random = sys.modules.get("numpy.random")  # NumPy 2 imports it on first use, not with numpy
    if random is not None:
        random.seed()  # else every task draws the same "random" numbers
    torch = sys.modules.get("torch")
    threads = env.get("OMP_NUM_THREADS", "")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))  # OpenMP read the variable at import, here


def _run_script(path: str, args: list[str]) -> None:
    sys.argv = [path, *args]
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    with open(path, "rb") as file:
        source = file.read()
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__dict__.update(__cached__=None, __builtins__=builtins)
    sys.modules["__main__"] = main
    exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)


def _run_module(name: str, args: list[str]) -> None:
    sys.argv = [name, *args]
    sys.path[0] = os.getcwd()
    # runpy runs the module in the namespace of __main__, which is this file's: give it its own
    sys.modules["__main__"] = types.ModuleType("__main__")
    runpy._run_module_as_main(name)  # type: ignore[attr-defined]  # what `python -m` calls


def _print_exception(exc: BaseException) -> None:
    """As ``python`` prints it: the frames of this file left out."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def _run(request: Mapping[str, Any]) -> int:
    """The task's program, ended as the interpreter ends it; its exit status."""
    code, interrupted = 0, False
    try:
        if request["kind"] == "module":
            _run_module(request["target"], request["args"])
        else:
            _run_script(request["target"], request["args"])
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt as exc:
        _print_exception(exc)
        code, interrupted = 1, True
    except BaseException as exc:
        _print_exception(exc)
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads, as at the end of `python script.py`
    except BaseException:
        traceback.print_exc()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    if interrupted:  # as python does: killed by SIGINT, so that the parent sees the signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _child(request: Mapping[str, Any], output: int, synced: int, closing: Iterable[int]) -> None:
    """In the forked process: become the task, run it, never return."""
    code = 1
    try:
        os.setsid()
        os.close(
            synced
        )  # the zygote waits for this: the task's group exists before its pid is sent
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in closing:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _stdio(request["env"], request["unbuffered"])
        _fresh_state(request["env"])
        # every thread's stack to the task's output on SIGUSR2: what the driver sends a task
        # it found hung, before stopping it (cauce.cluster._warm.STACKS_SIGNAL)
        faulthandler.register(signal.SIGUSR2, file=2, all_threads=True)
        code = _run(request)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


def _spawn(channel: socket.socket, message: bytes, fds: list[int], wakeup: tuple[int, int]) -> None:
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return
    request = json.loads(message)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else the task would write out this process's buffered output again
    wait_r, wait_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(wait_r)
        os.close(wait_w)
        os.close(fds[0])
        _send(channel, {"id": request["id"], "error": f"fork: {exc.strerror}"})
        return
    if pid == 0:
        os.close(wait_r)
        _child(request, fds[0], wait_w, [channel.fileno(), *wakeup])
    os.close(wait_w)
    os.close(fds[0])
    os.read(wait_r, 1)  # end of file once the child has its session (or has died)
    os.close(wait_r)
    _send(channel, {"id": request["id"], "pid": pid})


def _reap(channel: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(channel, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def main() -> int:
    channel = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # the job's folder, not this file's, is where a preloaded module is looked for first
    sys.path[0] = os.getcwd()
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            _send(channel, {"error": f"{name}: {type(exc).__name__}: {exc}"})
            return 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(channel, {"ready": True})
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is channel:
                message, fds, _, _ = socket.recv_fds(channel, _MAX_MESSAGE, 4)
                if not message:
                    return 0  # the driver is gone
                _spawn(channel, message, fds, (wake_r, wake_w))
            else:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
        _reap(channel)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the modules it imported need no teardown: it ran no task itself
