"""The public surface: every public package lists its public names in `__all__`, each of them
exists, and every name that other packages, the examples or the docs take from a public
package is one of them."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
import types
from collections.abc import Iterator

import pytest

import cauce
from helpers import ROOT


def _public_packages() -> list[str]:
    found = ["cauce"]
    for info in pkgutil.walk_packages(cauce.__path__, "cauce."):
        if info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


PACKAGES = _public_packages()
#: Public modules that are not packages but are imported by users as they are.
MODULES = ["cauce.errors", "cauce.cluster.api"]


def test_every_layer_is_a_checked_package() -> None:
    layers = {"cli", "cluster", "data", "frameworks", "gang", "history", "pipeline", "runtime"}
    assert {f"cauce.{name}" for name in layers | {"serve", "spec", "tune"}} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES + MODULES)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and str(getattr(value, "__module__", name)).startswith(name)
        and attr not in ("annotations",)
    }
    assert public <= exported | {"TYPE_CHECKING"}, sorted(public - exported)
    missing = sorted(attr for attr in exported if not hasattr(module, attr))
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"


def _imports_from(tree: ast.AST) -> Iterator[tuple[str, str, int]]:
    """(module, name, line) of every ``from cauce... import name``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "cauce"
        ):
            for alias in node.names:
                yield str(node.module), alias.name, node.lineno


_DOTTED = re.compile(r"(?<![\w.])(cauce(?:\.[a-z]\w*)+)\b")  # not spark.cauce.* settings


def _uses() -> Iterator[tuple[str, str, str]]:
    """(package, name, where) for each public package a name is taken from: by other packages
    of src, by the examples, by the docs' code."""
    src = ROOT / "src" / "cauce"
    for path in sorted(src.rglob("*.py")) + sorted((ROOT / "examples").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, name, line in _imports_from(tree):
            where = f"{path.relative_to(ROOT)}:{line}"
            inside = (
                path.is_relative_to(src)
                and path.relative_to(src).parts[0] == [*module.split("."), ""][1]
            )
            if module in PACKAGES and not inside:
                yield module, name, where
    for path in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"from (cauce[\w.]*) import ([\w, ]+)", text):
            for name in match.group(2).split(","):
                yield match.group(1), name.strip(), f"{path.relative_to(ROOT)}"
        for match in _DOTTED.finditer(text):
            parts = match.group(1).split(".")
            package = ".".join(parts[:-1])
            if package in PACKAGES and f"{package}.{parts[-1]}" not in PACKAGES + MODULES:
                yield package, parts[-1], f"{path.relative_to(ROOT)}"


def test_names_used_from_a_public_package_are_exported() -> None:
    uses = list(_uses())
    seen = {(package, name) for package, name, _ in uses}
    assert {("cauce", "report"), ("cauce.serve", "save_model"), ("cauce.data", "shard")} <= seen
    wrong = []
    for package, name, where in uses:
        module = importlib.import_module(package)
        submodule = f"{package}.{name}"
        if name not in module.__all__ and importlib.util.find_spec(submodule) is None:
            wrong.append(f"{where}: {package}.{name}")
    assert not wrong, "used but not in __all__:\n" + "\n".join(sorted(set(wrong)))


def test_launcher_does_not_import_frameworks() -> None:
    """`import cauce` and the CLI must not need torch, tensorflow or jax."""
    import subprocess
    import sys

    code = (
        "import sys, cauce, cauce.cli.main; cauce.cli.main.build_parser(); "
        "heavy = [m for m in ('torch', 'tensorflow', 'jax', 'pyspark') if m in sys.modules]; "
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
