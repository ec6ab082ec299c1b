"""Scripting the CLI, as a CI job or a cron script would: ``--format json`` outputs against the
schemas of docs/schemas/, the exit codes of docs/scripting.md, ``cauce completion bash`` driven
through bash's own completion, no colour when piped or with NO_COLOR, ``--dry-run`` without a
job id, and ``cauce run --param``."""

from __future__ import annotations

import importlib
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cauce.errors import CauceError
from helpers import ROOT, cauce, match_schema, write_job

#: Where the error classes are (``cauce`` here is the helper that runs the CLI).
ERROR_MODULES = ("cauce.errors", "cauce.serve.api", "cauce.data.api", "cauce.runtime.checkpoint")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Reports metrics (one infinite, one NaN: a diverging loss), fails its first attempt (rank 1
#: exits 3), succeeds in the second.
_FLAKY = """
import os, sys, cauce
ctx = cauce.context()
for step in range(3):
    cauce.report(step, loss=1.0 / (step + 1), spread=float("inf"), diverged=float("nan"))
if ctx.attempt == 0 and ctx.rank == 1:
    sys.exit(3)
print("lr", os.environ.get("CAUCE_PARAM_LR"), "batch", os.environ.get("CAUCE_PARAM_BATCH"))
"""


@pytest.fixture
def flaky(tmp_path: Path) -> Path:
    (tmp_path / "flaky.py").write_text(_FLAKY)
    return write_job(
        tmp_path,
        f"""
        name: flaky
        command: {sys.executable} flaky.py --lr {{lr}}
        roles:
          worker:
            instances: 2
            resources: {{cpus: 0.5, memory: 64MiB}}
        restart: {{max_restarts: 1, backoff: 0}}
        grace_period: 2
        tune:
          objective: {{metric: loss, direction: min}}
          space:
            lr: {{type: loguniform, low: 0.001, high: 1.0}}
            batch: {{type: choice, values: [16, 32]}}
          trials: 2
        """,
    )


def _strict_json(text: str) -> Any:
    """``text`` parsed as JSON proper: NaN and Infinity (which json.dumps writes) are errors."""

    def refuse(word: str) -> object:
        raise ValueError(f"{word} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_json_outputs_match_their_schemas(flaky: Path, cauce_env: dict[str, str]) -> None:
    """One job with a restart: run, jobs, show and metrics in JSON, attempts as in the table."""
    done = cauce(
        ["run", str(flaky), "--param", "lr=0.01", "--param", "batch=32", "--format", "json"],
        cauce_env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # only the JSON on stdout: task output goes to the logs
    match_schema(result, "run")
    assert (result["status"], result["ok"], result["attempts"]) == ("succeeded", True, 2)
    job_id = result["id"]
    log = Path(result["run_dir"]) / "logs" / "worker-0.log"
    assert "lr 0.01 batch 32" in log.read_text()

    jobs = json.loads(cauce(["jobs", "--format", "json"], cauce_env).stdout)
    match_schema(jobs, "jobs")
    assert [j["id"] for j in jobs] == [job_id]

    show = _strict_json(cauce(["show", job_id, "--format", "json"], cauce_env).stdout)
    match_schema(show, "show")
    assert {(t["task"], t["attempt"]) for t in show["tasks"]} == {
        (f"worker-{r}", a) for r in (0, 1) for a in (1, 2)
    }
    assert [e["restart"] for e in show["restart_events"]] == [1]

    metrics = _strict_json(cauce(["metrics", job_id, "--format", "json"], cauce_env).stdout)
    match_schema(metrics, "metrics")
    assert {m["attempt"] for m in metrics} == {1, 2}
    assert {m["value"] for m in metrics if m["name"] == "spread"} == {None}  # inf: not JSON
    # NaN is stored (as NULL and "nan"), not left out: every step of every task has it.
    nan = [
        (m["task"], m["attempt"], m["step"], m["value"]) for m in metrics if m["name"] == "diverged"
    ]
    loss = [(m["task"], m["attempt"], m["step"], None) for m in metrics if m["name"] == "loss"]
    assert nan and sorted(nan) == sorted(loss), nan
    table = cauce(["metrics", job_id], cauce_env).stdout.splitlines()
    shown = {(line.split()[0], int(line.split()[1])) for line in table[1:]}
    assert shown == {(m["task"], m["attempt"]) for m in metrics}  # the same numbering
    words = {line.split()[3]: line.split()[4] for line in table[1:]}  # metric -> its value
    assert (words["diverged"], words["spread"]) == ("nan", "inf"), table

    # --param is checked against the space: exit 2 with one line naming the fix.
    for params, says in (
        (["lr=0.01"], "missing batch: one of 16, 32"),
        (["lr=5", "batch=16"], "--param lr must be a number in [0.001, 1]"),
        (["lrr=1"], "did you mean 'lr'?"),
    ):
        args = [arg for p in params for arg in ("--param", p)]
        bad = cauce(["run", str(flaky), *args], cauce_env)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert bad.stderr.count("\n") == 1


def test_dry_run_shows_units_and_no_job_id(flaky: Path, cauce_env: dict[str, str]) -> None:
    done = cauce(
        ["run", "--dry-run", str(flaky), "--param", "lr=0.1", "--param", "batch=16"], cauce_env
    )
    assert done.returncode == 0, done.stderr
    assert "cpus 0.5 memory 64 MiB" in done.stdout
    assert "CAUCE_JOB_ID=<job-id>" in done.stdout and "/runs/<job-id>/logs/" in done.stdout
    assert "flaky-2" not in done.stdout  # no id that a job will never have
    assert json.loads(cauce(["jobs", "--format", "json"], cauce_env).stdout) == []


def _words(script: str, *words: str) -> list[str]:
    """What bash's completion function offers for ``words`` (the last one being completed)."""
    driver = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_cauce; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", driver], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    done = cauce(["completion", "bash"], cauce_env)
    assert done.returncode == 0, done.stderr
    script = tmp_path / "cauce.bash"
    script.write_text(done.stdout)
    check = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stderr
    assert {"run", "jobs", "show", "metrics", "trials", "completion"} <= set(
        _words(str(script), "cauce", "")
    )
    assert set(_words(str(script), "cauce", "t")) == {"trials", "tune", "tensorboard"}
    assert "--dry-run" in _words(str(script), "cauce", "run", "--d")
    assert _words(str(script), "cauce", "jobs", "--format", "") == ["table", "json"]
    assert _words(str(script), "cauce", "completion", "") == ["bash", "zsh"]
    zsh = cauce(["completion", "zsh"], cauce_env).stdout
    assert zsh.startswith("autoload -U +X bashcompinit") and "complete -o default -F _cauce" in zsh


#: zsh without a terminal: compinit, the script, then what zsh's bashcompinit does on Tab
#: (``_bash_complete``): the words as COMP_WORDS, and ``compgen -F _cauce``. zsh's compgen does
#: not filter by the word being completed (zsh's matcher does, after), so neither does this.
_ZSH_DRIVER = """
autoload -U +X compinit && compinit -u -D
source "$1"; shift
local -a words COMP_WORDS; local CURRENT COMP_CWORD
words=("$@"); CURRENT=$#
COMP_WORDS=("${words[@]}"); COMP_CWORD=$((CURRENT - 1))
compgen -F _cauce -- "${words[CURRENT]}"
"""


@pytest.mark.skipif(
    shutil.which("zsh") is None, reason="zsh is not installed (scripts/setup.sh installs it)"
)
def test_zsh_completion(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    done = cauce(["completion", "zsh"], cauce_env)
    assert done.returncode == 0, done.stderr
    script = tmp_path / "cauce.zsh"
    script.write_text(done.stdout)
    driver = tmp_path / "driver.zsh"
    driver.write_text(_ZSH_DRIVER)
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}

    def words(*typed: str) -> list[str]:
        argv = ["zsh", "-f", str(driver), str(script), "cauce", *typed]
        got = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path, check=False
        )
        assert got.returncode == 0 and not got.stderr, got.stderr
        return got.stdout.split()

    assert {"run", "tune", "trials", "completion"} <= set(words(""))
    assert words("completion", "") == ["bash", "zsh"]
    assert words("jobs", "--format", "") == ["table", "json"]
    assert "--dry-run" in words("run", "--d") and "--trials" not in words("run", "--d")
    assert "--trials" in words("tune", "-")


def _on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """stderr and stdout of ``cauce ARGS`` run on a pseudo-terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cauce", *args],
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        process.wait(timeout=30)
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_colour_on_a_terminal_only(cauce_env: dict[str, str]) -> None:
    env = {**cauce_env, "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    args = ["show", "no-such-job"]
    assert ANSI.search(_on_a_terminal(args, env))  # a terminal: coloured
    assert not ANSI.search(_on_a_terminal(args, {**env, "NO_COLOR": "1"}))
    piped = cauce(args, env)
    assert piped.returncode == 1 and piped.stderr.startswith("error: ")
    assert not ANSI.search(piped.stderr + piped.stdout)


def _documented_exit_codes() -> dict[str, int]:
    """Class name -> exit code, from the table of docs/scripting.md."""
    text = (ROOT / "docs" / "scripting.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    found: dict[str, int] = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([A-Z][A-Za-z]+)`", cells[2]):
            found[name] = int(cells[0])
    return found


def test_exit_codes_table_matches_the_code() -> None:
    documented = _documented_exit_codes()
    classes = {
        name: cls
        for module in map(importlib.import_module, ERROR_MODULES)
        for name, cls in vars(module).items()
        if isinstance(cls, type) and issubclass(cls, CauceError)
    }
    classes.pop("CauceError")
    assert set(documented) == set(classes), "every error class in the table, and only those"
    assert {name: cls.exit_code for name, cls in classes.items()} == documented
