"""How the suite's tests are shared between pytest-xdist's workers (scripts/test.sh runs two).

xdist's default hands out tests one by one, so the tests of one module, or of one session
fixture, end up on both workers, and each worker builds what they share: a Spark standalone
cluster, a multi-host cluster of network namespaces, a trained model, a server. Here the tests
that share something expensive stay on one worker, which builds it once:

- the tests of a module that has a module-scoped fixture, together;
- the tests of every module that uses one of :data:`SESSION_FIXTURES`, together per fixture.

Every other test is handed out alone, long ones (marked ``slow``) first, so that no long test
starts last while the other worker has nothing left to do. A group is found from the fixtures
the test file asks for (parameters and ``request.getfixturevalue``), on the controller and on
the workers alike.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import Any

import pytest

#: Session fixtures that start processes: the tests that use them share one worker.
#: (``portal`` stands for its session fixture ``portal_server``: a module's tests take the browser.)
SESSION_FIXTURES = ("spark_cluster", "multihost_cluster", "portal", "mlflow_server")

_TESTS = Path(__file__).resolve().parent
_MODULE_SCOPE = re.compile(r"scope=['\"]module['\"]")


def _fixtures(source: str) -> set[str]:
    """The fixtures a test file asks for: its functions' parameter names, and the names given to
    ``request.getfixturevalue``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            names.update(a.arg for a in node.args.args + node.args.kwonlyargs)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "getfixturevalue"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


@functools.cache
def _groups() -> dict[str, str]:
    """Each grouped test file's group: the session fixtures it uses, joined with those of every
    file it shares one with (a file that uses two of them links their groups), or else its own
    name if it has a module-scoped fixture."""
    uses: dict[str, set[str]] = {}
    found: dict[str, str] = {}
    for path in sorted(_TESTS.glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        names = _fixtures(text) & set(SESSION_FIXTURES)
        if names:
            uses[path.name] = names
        elif _MODULE_SCOPE.search(text):
            found[path.name] = path.name
    linked: list[set[str]] = []
    for names in uses.values():
        touching = [g for g in linked if g & names]
        merged = set(names).union(*touching)
        linked = [g for g in linked if not g & names] + [merged]
    for file, names in uses.items():
        found[file] = "+".join(sorted(next(g for g in linked if g & names)))
    return found


def group_of(file: str) -> str | None:
    """The group of the tests in ``file`` (a path as in a node id), or None: handed out alone."""
    return _groups().get(Path(file).name)


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: none without it (-p no:xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "load":  # asked for another mode: xdist's own
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid.split("::", 1)[0]) or nodeid

    return Grouped(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the slow tests handed out alone go first (a stable sort: the workers must
    collect the same order). Groups are ordered by the scheduler, largest first."""
    if not hasattr(config, "workerinput"):
        return

    def key(item: pytest.Item) -> int:
        alone = group_of(item.nodeid.split("::", 1)[0]) is None
        return 0 if alone and item.get_closest_marker("slow") else 1

    items.sort(key=key)
