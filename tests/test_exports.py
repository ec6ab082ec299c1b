"""The public surface: `__all__` lists every public name of each public module, and only those."""

from __future__ import annotations

import importlib
import types

import pytest

PUBLIC = [
    "cauce",
    "cauce.errors",
    "cauce.spec",
    "cauce.cluster",
    "cauce.cluster.api",
    "cauce.frameworks",
    "cauce.gang",
    "cauce.history",
    "cauce.runtime",
    "cauce.data",
]


@pytest.mark.parametrize("name", PUBLIC)
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
    assert all(hasattr(module, attr) for attr in exported)


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
