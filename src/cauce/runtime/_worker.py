"""A trial worker: a process that imports a trial's module once and calls its function for trial
after trial (``tune.entrypoint: module:function``), so that a study pays the interpreter and the
imports once per worker rather than once per trial.

    python -m cauce.runtime._worker --fd 3 train:main     # a reusable worker (cauce.tune's pool)
    python -m cauce.runtime._worker train:main            # one call, then exit (other clusters)

The pool speaks to it over the socket ``--fd``, one JSON line each way: ``{"ready": true}`` once
the module is imported; then, per trial, ``{"env": {...}, "cwd": ..., "log": ...}`` in and
``{"exit": CODE, "retire": BOOL}`` out. For a trial the worker takes the trial's environment
(so ``cauce.context()``, ``cauce.report`` and pruning work as in a fresh process), its working
folder, and its log as stdout and stderr. A trial that fails, exits, or leaves threads or child
processes behind retires the worker (the pool starts another); a crash takes only this worker.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["call", "load", "main"]


def load(entrypoint: str) -> Callable[..., Any]:
    module, _, name = entrypoint.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the job's workdir, as for `python script.py`
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{entrypoint} is not a function")
    return function  # type: ignore[no-any-return]


def call(function: Callable[..., Any]) -> int:
    """Call ``function`` with the trial's parameters (or none, if it takes none); the exit
    code of a process that ran it: 0, the code of a ``SystemExit`` (``cauce.TrialPruned`` is
    0), or 1 with the traceback on stderr."""
    from cauce.runtime._context import context

    try:
        takes = [
            p
            for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if takes:
            function(dict(context().params))
        else:
            function()
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def _run(function: Callable[..., Any] | None, error: str, job: Mapping[str, Any]) -> int:
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in job["env"].items()})
    os.chdir(job["cwd"])
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        if function is None:
            sys.stderr.write(error)
            return 1
        return call(function)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _children() -> bool:
    """True if this process has a live child (a trial left one behind)."""
    me = str(os.getpid())
    try:
        with open(f"/proc/{me}/task/{me}/children", encoding="ascii") as file:
            return bool(file.read().strip())
    except OSError:
        return False


def serve(channel: socket.socket, entrypoint: str) -> None:
    function: Callable[..., Any] | None = None
    error = ""
    try:
        function = load(entrypoint)
    except BaseException:
        error = traceback.format_exc()  # said in the log of every trial it would run
    out = channel.makefile("wb")
    out.write(b'{"ready": true}\n')
    out.flush()
    threads = threading.active_count()
    for line in channel.makefile("rb"):
        code = _run(function, error, json.loads(line))
        retire = code != 0 or threading.active_count() > threads or _children()
        out.write(json.dumps({"exit": code, "retire": retire}).encode() + b"\n")
        out.flush()
        if retire:
            return


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--fd":
        with socket.socket(fileno=int(argv[1])) as channel:
            serve(channel, argv[2])
        return 0
    if len(argv) != 1:
        sys.stderr.write("usage: python -m cauce.runtime._worker [--fd N] module:function\n")
        return 2
    try:
        function = load(argv[0])
    except BaseException:
        traceback.print_exc()
        return 1
    return call(function)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
