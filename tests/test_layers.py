"""The layers of DESIGN.md, enforced: every import of every module of src/cauce (module-level
and inside functions, ``import x`` and ``from x import y``) points down the layer order, no
package imports another package's private module, and no module is over 400 lines.

The order, top to bottom, is DESIGN.md's, with the four top-level modules placed by what they
import:

- ``cauce.__main__`` runs the CLI: on top, above ``cli``.
- ``cauce`` (the package root), ``cauce._api`` and ``cauce._submit`` / ``cauce._detached``
  (``submit`` and its driver process) are the facade: ``run`` and ``plan`` open a
  cluster, drive a gang and record it, and the root re-exports runtime and spec names. They
  sit right above ``gang``; the layers above may use them (``serve`` reads ``__version__``).
- ``cauce._console`` (the progress console that run, tune and pipeline render through) imports
  nothing of cauce: it is a shared helper below everything, like ``cauce._util`` and
  ``cauce.errors``, which every layer may import, private name or not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT

SRC = ROOT / "src"
MAX_LINES = 400

#: Top to bottom. A module may import its own group and any group below it.
ORDER = (
    "__main__",
    "cli",
    "ui",
    "pipeline",
    "tune",
    "serve",
    "data",
    "cauce",  # the facade: the package root and cauce._api
    "gang",
    "tracking",
    "frameworks",
    "cluster",
    "history",
    "runtime",
    "spec",
    "base",  # cauce._util, cauce.errors, cauce._console
)
_GROUP_OF_TOP = {
    "_api": "cauce",
    "_submit": "cauce",
    "_detached": "cauce",
    "_util": "base",
    "errors": "base",
    "_console": "base",
}

_CLUSTER_TYPES = (
    "the cluster contract carries the gang layout (GangLayout, TaskSlot: frameworks/api.py) "
    "that the env contract is computed from; the cluster fills it, frameworks defines it"
)
_SPARK_ENV = (
    "a Spark barrier task computes its env contract on the executor, once the addresses of "
    "the gang are gathered there, with the same pure function the local cluster calls"
)

#: (importer, imported module) -> (names allowed, reason): the honest exceptions.
EXCEPTIONS: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    ("cauce.spec._parse", "cauce.frameworks"): (
        frozenset({"FRAMEWORKS", "get_framework"}),
        "the framework registry owns the frameworks' names and roles, and the spec boundary "
        "validates a job against it; imported lazily inside parse_job, since frameworks/ "
        "builds on spec's RoleSpec",
    ),
    ("cauce.spec._sections", "cauce.frameworks"): (
        frozenset({"Framework"}),
        "for typing only (TYPE_CHECKING): the roles parser takes the registry's entry",
    ),
    ("cauce.cluster.api", "cauce.frameworks.api"): (frozenset({"GangLayout"}), _CLUSTER_TYPES),
    ("cauce.cluster.local", "cauce.frameworks.api"): (frozenset({"GangLayout"}), _CLUSTER_TYPES),
    ("cauce.cluster.spark._gang", "cauce.frameworks.api"): (
        frozenset({"GangLayout"}),
        _CLUSTER_TYPES,
    ),
    ("cauce.cluster.spark._task", "cauce.frameworks.api"): (
        frozenset({"GangLayout", "TaskSlot"}),
        _CLUSTER_TYPES,
    ),
    ("cauce.cluster.spark._task", "cauce.frameworks"): (frozenset({"task_env"}), _SPARK_ENV),
    ("cauce.cluster.spark._netif", "cauce.frameworks.api"): (
        frozenset({"GangLayout"}),
        _CLUSTER_TYPES,
    ),
    ("cauce.cluster.spark._cluster", "cauce.frameworks"): (
        frozenset({"GangLayout", "contract_names", "task_env"}),
        _SPARK_ENV,
    ),
}

#: Imports in modules other branches are changing now; the fix is named beside each.
PENDING: dict[tuple[str, str], tuple[frozenset[str], str]] = {}


@dataclass(frozen=True)
class Import:
    importer: str  # the module that imports
    module: str  # the module imported (for ``from M import n``: M.n when that is a module)
    name: str  # the name taken from it, "" for ``import M`` and for a module
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, tuple[Path, bool]]:
    return {
        _module_name(path): (path, path.name == "__init__.py")
        for path in sorted((SRC / "cauce").rglob("*.py"))
    }


def imports_of(
    module: str, source: str, *, is_package: bool, modules: Iterable[str]
) -> Iterator[Import]:
    """Every import of cauce in ``source``, wherever it stands (functions, TYPE_CHECKING)."""
    known = set(modules)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, "", node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                parent = package[: len(package) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield Import(module, sub, "", node.lineno)
                else:
                    yield Import(module, base, alias.name, node.lineno)


def group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "cauce"
    return _GROUP_OF_TOP.get(parts[1], parts[1])


def _private(imp: Import) -> bool:
    """Whether the import reaches below another package's surface."""
    parts = imp.module.split(".")[2:] + ([imp.name] if imp.name else [])
    return any(part.startswith("_") and not part.startswith("__") for part in parts)


def _excused(imp: Import, table: Mapping[tuple[str, str], tuple[frozenset[str], str]]) -> bool:
    entry = table.get((imp.importer, imp.module))
    return entry is not None and ("*" in entry[0] or (imp.name or imp.module) in entry[0])


def problems(
    found: Iterable[Import],
    exceptions: Mapping[tuple[str, str], tuple[frozenset[str], str]] = EXCEPTIONS,
) -> list[str]:
    """One line per import that goes up a layer or into another package's private module."""
    out = []
    for imp in found:
        if not imp.module.startswith("cauce") or imp.module.split(".")[0] != "cauce":
            continue
        mine, theirs = group(imp.importer), group(imp.module)
        if theirs in (mine, "base") or _excused(imp, exceptions):
            continue
        what = f"{imp.importer}:{imp.line} imports {imp.module}" + (
            f".{imp.name}" if imp.name else ""
        )
        if ORDER.index(theirs) < ORDER.index(mine):
            out.append(f"{what}: up from {mine} to {theirs}")
        elif _private(imp):
            out.append(f"{what}: a private module of {theirs}; import it from cauce.{theirs}")
    return out


def _all_imports() -> list[Import]:
    sources = _sources()
    found: list[Import] = []
    for module, (path, is_package) in sources.items():
        found += imports_of(
            module, path.read_text(encoding="utf-8"), is_package=is_package, modules=sources
        )
    return found


def test_imports_point_down_and_into_public_modules() -> None:
    assert problems(_all_imports(), {**EXCEPTIONS, **PENDING}) == []


@pytest.mark.parametrize("table", [EXCEPTIONS, PENDING], ids=["exceptions", "pending"])
def test_every_exception_is_still_needed(
    table: Mapping[tuple[str, str], tuple[frozenset[str], str]],
) -> None:
    found = _all_imports()
    for (importer, module), (names, _) in table.items():
        used = {i.name or i.module for i in found if (i.importer, i.module) == (importer, module)}
        assert used, f"{importer} no longer imports {module}: remove its exception"
        assert "*" in names or names <= used, (importer, module, sorted(names - used))


def test_the_check_reports_a_fake_upward_and_a_fake_private_import() -> None:
    modules = set(_sources())
    fake_spec = "def parse():\n    from cauce.gang import JobDriver\n"
    fake_cluster = "from cauce.spec._parse import CLUSTER_PREFIXES\nimport cauce.serve._app\n"
    fake_relative = "from .._values import MAX_CPUS\n"
    found = [
        *imports_of("cauce.spec._fake", fake_spec, is_package=False, modules=modules),
        *imports_of("cauce.cluster._fake", fake_cluster, is_package=False, modules=modules),
        *imports_of("cauce.spec.sub._fake", fake_relative, is_package=False, modules=modules),
    ]
    assert problems(found) == [
        "cauce.spec._fake:2 imports cauce.gang.JobDriver: up from spec to gang",
        "cauce.cluster._fake:1 imports cauce.spec._parse.CLUSTER_PREFIXES: a private module "
        "of spec; import it from cauce.spec",
        "cauce.cluster._fake:2 imports cauce.serve._app: up from cluster to serve",
    ]
    # a relative import resolves: cauce.spec.sub._fake -> cauce.spec._values, same package
    assert [i.module for i in found[-1:]] == ["cauce.spec._values"]
    # an exception excuses only the names it lists
    other = Import("cauce.cluster.api", "cauce.frameworks.api", "Framework", 1)
    assert problems([other]) == [
        "cauce.cluster.api:1 imports cauce.frameworks.api.Framework: up from cluster to frameworks"
    ]


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path, _ in _sources().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by responsibility (at most {MAX_LINES} lines): {long}"
