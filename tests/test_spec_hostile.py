"""Specs written by a hostile or careless user: refused at once, in one line, exit 2."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cauce._util import yamlfile
from cauce.cluster._config import load_local_config
from cauce.errors import SpecError
from cauce.pipeline import load_pipeline
from cauce.spec import load_job, parse_job, parse_tune
from test_spec import job, refused

# 9 lists of 9 aliases to the previous one: 9**9 (387 million) strings once expanded, in 400
# bytes. Formatting or walking the expanded value took gigabytes and minutes.
_BOMB = 'x0: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"x{i + 1}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for i, (prev, name) in enumerate(zip("abcdefgh", "bcdefghi", strict=True))
)


def bomb_job() -> str:
    return (
        "name: bomb\ntune:\n"
        + "".join(f"  {line}\n" for line in _BOMB.splitlines())
        + ("command: *i\n")
    )


def refused_text(text: str, tmp_path: Path, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_job(path)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2
    return message


def run_cli(
    path: Path, env: dict[str, str], preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cauce", "run", "--dry-run", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=preexec_fn,
    )


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_alias_bomb_is_refused_quickly_with_bounded_memory(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb_job(), encoding="utf-8")
    assert path.stat().st_size < 500
    # 1 GiB of address space for the whole CLI; today it grows past that (and spins).
    done = run_cli(path, cauce_env, preexec_fn=_limit_memory)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert "aliases expand into more than" in lines[0] and "line " in lines[0]


@pytest.mark.parametrize("libyaml", [True, False], ids=["libyaml", "python"])
def test_both_loaders_refuse_bombs_recursion_depth_and_duplicates(libyaml: bool) -> None:
    if libyaml and not yaml_has_libyaml():
        pytest.skip("PyYAML without libyaml")
    loader = yamlfile._loader_class(libyaml)
    cases = {
        _BOMB: "aliases expand into more than",
        "x: &x [1, *x]\n": "recursive values are not allowed",
        "[" * 100 + "]" * 100: "nests deeper than 64 levels",
        "a: 1\nb: 2\na: 3\n": "key 'a' is given twice, at lines 1 and 3",
        "d: 2001-02-30\n": "cannot read this value: day is out of range",
    }
    for text, expected in cases.items():
        with pytest.raises(SpecError, match=expected):
            yamlfile._parse(text, "f.yaml", loader)
    merged = "b: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n"  # a merge may override: not a duplicate
    assert yamlfile._parse(merged, "f.yaml", loader) == {
        "b": {"x": 1, "y": 2},
        "c": {"x": 3, "y": 2},
    }


def yaml_has_libyaml() -> bool:
    import yaml

    return bool(getattr(yaml, "__with_libyaml__", False))


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path: Path) -> None:
    message = refused_text("name: t\ncommand: a\nenv:\n  X: 1\ncommand: b\n", tmp_path)
    assert "key 'command' is given twice, at lines 2 and 5" in message


def test_spec_files_over_1_mib_are_refused(tmp_path: Path) -> None:
    text = "name: t\ncommand: true\n# " + "x" * (1 << 20) + "\n"
    message = refused_text(text, tmp_path)
    assert "is larger than 1024 KiB" in message


def test_non_utf8_file_names_file_and_offset(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"name: t\ncommand: caf\xe9\n")
    done = run_cli(path, cauce_env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: job file {str(path)!r} is not UTF-8 text: byte 0xe9 at offset 20 cannot be "
        "decoded; save the file as UTF-8"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timeout: .nan", "timeout must be a number, got nan"),
        ("timeout: .inf", "timeout must be a finite number, got inf"),
        ("timeout: 1.0e+300", "timeout must be <= 1e+08 seconds"),
        ("hang_timeout: -.inf", "hang_timeout must be a finite number"),
        ("grace_period: .inf", "grace_period must be a finite number"),
        ("grace_period: 1.0e+12", "grace_period must be <= 86400 seconds"),
        ("restart: {backoff: .nan}", "restart.backoff must be a number, got nan"),
        ("restart: {max_backoff: 1.0e+30}", "restart.max_backoff must be <= 86400"),
        ("restart: {max_restarts: 100000000000000}", "max_restarts must be <= 1000000000"),
        ("roles: {worker: {resources: {cpus: .nan}}}", "cpus must be a number, got nan"),
        ("roles: {worker: {resources: {cpus: 1.0e+20}}}", "cpus must be <= 100000"),
        ("roles: {worker: {resources: {memory: .inf}}}", "memory must be a finite number"),
        ("roles: {worker: {resources: {memory: -.inf}}}", "memory must be a finite number"),
        ("roles: {worker: {resources: {memory: 99999999999TiB}}}", "must be at most 1 EiB"),
        ("roles: {worker: {resources: {gpus: 100000}}}", "gpus must be <= 1024"),
        ("roles: {worker: {instances: 100000000}}", "can never be placed at once"),
        (
            "roles: {worker: {instances: 6000}, ps: {instances: 6000}}",
            "roles add up to 12000 tasks, more than 10000",
        ),
    ],
)
def test_numbers_are_finite_and_bounded(text: str, expected: str, tmp_path: Path) -> None:
    message = refused_text(f"name: t\ncommand: 'true'\n{text}\n", tmp_path)
    assert expected in message


@pytest.mark.parametrize(
    ("tune", "expected"),
    [
        ({"low": float("nan"), "high": 1.0}, "low must be a number, got nan"),
        ({"low": 0.0, "high": float("inf")}, "high must be a finite number, got inf"),
        ({"low": -1e300, "high": 1.0}, "low must be >= -1e+15"),
        ({"low": 0.0, "high": 1.0, "step": 1e-300}, "more than 1000000000"),
        ({"type": "int", "low": 0, "high": 10**30}, "high must be within +-1e+15"),
        ({"type": "int", "low": 0, "high": 1e300}, "high must be"),
    ],
)
def test_tune_bounds_are_finite_and_bounded(tune: dict[str, object], expected: str) -> None:
    param = {"type": "uniform", **tune}
    with pytest.raises(SpecError, match=r"^job\.yaml: tune\.space\.x\.") as info:
        parse_tune(
            {"objective": {"metric": "m", "direction": "min"}, "space": {"x": param}},
            source="job.yaml",
        )
    assert expected in str(info.value)


def test_tune_grid_and_seed_bounds() -> None:
    base: dict[str, object] = {"objective": {"metric": "m", "direction": "min"}}
    huge_grid = {
        **base,
        "space": {"a": {"type": "int", "low": 0, "high": 10**9}},
        "sampler": "grid",
    }
    with pytest.raises(SpecError, match=r"grid of 1e\+09 points, more than 1000000"):
        parse_tune(huge_grid)
    seeded = {
        **base,
        "space": {"a": {"type": "int", "low": 0, "high": 3}},
        "sampler": {"type": "tpe", "seed": 2**40},
    }
    with pytest.raises(SpecError, match=r"tune\.sampler\.seed must be <= 2147483647"):
        parse_tune(seeded)
    with pytest.raises(SpecError, match=r"tune.prune_grace must be a finite number"):
        parse_tune({**seeded, "sampler": "tpe", "prune_grace": float("inf")})


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('command: "python\\0 train.py"', "command"),
        ('command: [python, "a\\0b"]', "command"),
        ('command: "true"\nenv: {X: "a\\0b"}', "env.X"),
        ('command: "true"\nworkdir: "code\\0"', "workdir"),
        ('command: "true"\nroles: {worker: {env: {Y: "\\0"}}}', "roles.worker.env.Y"),
    ],
)
def test_nul_characters_are_refused_at_parse_time(text: str, field: str, tmp_path: Path) -> None:
    message = refused_text(f"name: t\n{text}\n", tmp_path)
    assert f"{field} must not contain a NUL character" in message


@pytest.mark.parametrize(
    "address",
    [
        "spark://",
        "spark://h:notaport",
        "spark://h:70000",
        "spark://:7077",
        "spark://h1:7077,",
        "local[0]",
        "local[x]",
        "k8s://",
        "yarnn",
    ],
)
def test_cluster_addresses_that_do_not_parse_are_spec_errors(address: str) -> None:
    assert "cluster must" in refused(job(cluster=address))


@pytest.mark.parametrize(
    "address",
    ["local", "spark://h:7077", "spark://h1:7077,h2:7077", "spark://[::1]:7077", "local[*]",
     "local[4]", "local[4,2]", "yarn", "k8s://https://api.example.com:6443"],
)  # fmt: skip
def test_cluster_addresses_that_parse(address: str) -> None:
    assert parse_job(job(cluster=address)).cluster == address


def test_cli_refuses_a_cluster_without_host(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: t\ncommand: 'true'\ncluster: spark://\n", encoding="utf-8")
    done = run_cli(path, cauce_env)
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
    assert "cluster must name the Spark master as spark://HOST:PORT" in done.stderr


def test_messages_cut_long_values_short() -> None:
    message = refused(job(name="x" * 100_000))
    assert len(message) < 300 and "..." in message
    message = refused(job(timeout="s" * 1_000_000))
    assert len(message) < 300
    message = refused(job(**{"y" * 100_000: 1}))  # an unknown key, in the field path
    assert len(message) <= 2000


def test_config_yaml_goes_through_the_same_loader(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(_BOMB, encoding="utf-8")
    with pytest.raises(SpecError, match="aliases expand into more than"):
        load_local_config(tmp_path)
    (tmp_path / "config.yaml").write_text("local: {cpus: .nan}\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"local\.cpus must be a number, got nan"):
        load_local_config(tmp_path)
    (tmp_path / "config.yaml").write_bytes(b"local: {gpus: \xff}\n")
    with pytest.raises(SpecError, match="is not UTF-8 text: byte 0xff at offset 14"):
        load_local_config(tmp_path)


def test_pipeline_files_go_through_the_same_loader(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("steps:\n" + "".join(f"  {line}\n" for line in _BOMB.splitlines()))
    with pytest.raises(SpecError, match="aliases expand into more than"):
        load_pipeline(path)
    path.write_bytes(b"steps: {a: \xc3}\n")
    with pytest.raises(SpecError, match="is not UTF-8 text"):
        load_pipeline(path)


def test_grid_count_matches_the_grid_without_making_it() -> None:
    from cauce.spec import ParamSpec

    params = [
        ParamSpec("a", "int", low=0.0, high=10.0, step=3.0),
        ParamSpec("b", "int", low=-5.0, high=5.0, step=1.0),
        ParamSpec("c", "uniform", low=0.0, high=1.0, step=0.25),
        ParamSpec("d", "choice", values=("x", 1, True)),
        ParamSpec("e", "uniform", low=0.0, high=1.0),
        ParamSpec("f", "loguniform", low=0.1, high=1.0),
    ]
    for param in params:
        grid = param.grid()
        assert param.grid_count() == (None if grid is None else len(grid)), param
