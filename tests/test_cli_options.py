"""The env-var-backed option helper every command declares its options with."""

from __future__ import annotations

import argparse

import pytest

from cauce.cli._options import env_default, env_option


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="t")
    env_option(p, "model", env="T_MODEL", help="a model")
    env_option(p, "--port", env="T_PORT", type=int, default="8080", help="a port")
    env_option(p, "--out", env="T_OUT", required=True, help="where")
    env_option(
        p, "--engine", env="T_ENGINE", default="duckdb", choices=("duckdb", "spark"), help=""
    )
    env_option(p, "--force", env="T_FORCE", flag=True, help="again")
    return p


def test_command_line_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parser().parse_args(["m", "--out", "o"])
    assert (args.model, args.port, args.out, args.engine, args.force) == (
        "m",
        8080,
        "o",
        "duckdb",
        False,
    )
    for name, value in {"T_MODEL": "em", "T_PORT": "9", "T_OUT": "eo", "T_FORCE": "yes"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("T_ENGINE", "spark")
    args = _parser().parse_args([])  # the positional and --out are optional once set
    assert (args.model, args.port, args.out, args.engine, args.force) == (
        "em",
        9,
        "eo",
        "spark",
        True,
    )
    args = _parser().parse_args(["m", "--port", "1", "--out", "o", "--engine", "duckdb"])
    assert (args.model, args.port, args.out, args.engine) == ("m", 1, "o", "duckdb")


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("T_MODEL", "T_PORT", "T_OUT", "T_ENGINE", "T_FORCE"):
        monkeypatch.setenv(name, "")
    assert env_default("T_PORT", "d") == "d"
    with pytest.raises(ValueError, match="required"):
        _parser().parse_args([])
    args = _parser().parse_args(["m", "--out", "o"])
    assert (args.port, args.engine, args.force) == (8080, "duckdb", False)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("T_PORT", "x", "argument --port: invalid int value: 'x' (from $T_PORT)"),
        ("T_ENGINE", "spork", "invalid choice: 'spork' (choose from 'duckdb', 'spark') (from"),
        ("T_FORCE", "maybe", "argument --force: must be one of 1, true, yes, on, 0, false"),
    ],
)
def test_bad_values_from_the_environment_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as info:
        _parser().parse_args(["m", "--out", "o"])
    assert says in str(info.value) and f"${name}" in str(info.value)


def test_help_names_the_variable_and_the_default() -> None:
    text = _parser().format_help()
    assert "a port (default 8080) [env T_PORT]" in " ".join(text.split())
    assert "again [env T_FORCE]" in " ".join(text.split())
