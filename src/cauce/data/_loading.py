"""Loading a preparation function (``MODULE:FUNCTION``, ``PATH.py:FUNCTION``); hashing its code."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cauce.data._context import PrepareContext
from cauce.data.api import DataError, DataNotFound

BuildFn = Callable[[PrepareContext], Mapping[str, Any]]


def load_function(fn: BuildFn | str) -> tuple[BuildFn, str]:
    """``fn`` itself, or the function named by ``"module:function"`` / ``"file.py:function"``."""
    if not isinstance(fn, str):
        if not callable(fn):
            raise DataError(f"expected a function or 'module:function', got {fn!r}")
        return fn, f"{fn.__module__}:{fn.__qualname__}"
    target, sep, attr = fn.rpartition(":")
    if not sep or not target or not attr:
        raise DataError(f"{fn!r}: expected MODULE:FUNCTION or PATH.py:FUNCTION")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise DataNotFound(f"{target}: no such file", path=target)
        mod_name = f"_cauce_prepare_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise DataError(f"{target}: cannot load as a Python module", path=target)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise DataError(f"{fn}: no module named {exc.name!r}") from exc
            raise
    func = getattr(module, attr, None)
    if not callable(func):
        raise DataNotFound(f"{fn}: module {target!r} has no function {attr!r}")
    return func, fn


def hash_code(func: Callable[..., Any]) -> tuple[str, list[str]]:
    """Hash the file that defines ``func`` and the modules beside it that were loaded."""
    try:
        source = inspect.getsourcefile(func)
    except TypeError:
        source = None
    if source is None or not os.path.isfile(source):  # python -c's "<string>", a deleted file
        raise DataError(
            f"{func!r}: cannot find its source file to hash ({source or 'none'}; define it in "
            "a module file)"
        )
    here = Path(source).resolve()
    files = {here}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and Path(path).resolve().parent == here.parent:
            files.add(Path(path).resolve())
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest(), [_short(p) for p in sorted(files)]


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
