"""Helpers for tests that run the real `cauce` CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

BIN = Path(__file__).parent / "bin"
ROOT = Path(__file__).parent.parent

#: Process groups of servers that session fixtures started (an MLflow server first asked for
#: inside a test): they outlive that test on purpose, so the leak check leaves them alone.
SESSION_GROUPS: set[int] = set()


def cauce(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m cauce ARGS` to the end and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "cauce", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cauce_popen(
    args: Sequence[str], env: Mapping[str, str], *, cwd: str | os.PathLike[str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cauce", *args],
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not ended within ``grace`` seconds; reaped."""
    process.terminate()
    try:
        process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def match_schema(doc: object, name: str) -> None:
    """Fail unless ``doc`` (a parsed ``--format json`` output) matches docs/schemas/NAME.json."""
    import json

    import jsonschema

    schema = json.loads((ROOT / "docs" / "schemas" / f"{name}.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, f"{name}.json: {errors[:5]}"


def write_job(folder: Path, text: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def py(script: str, *args: object) -> str:
    """A shell command that runs one of tests/bin with this interpreter, quoted for YAML."""
    parts = [sys.executable, str(BIN / script), *(str(a) for a in args)]
    return json.dumps(shlex.join(parts))


def free_port() -> int:
    """A port free now for a server a test starts, drawn below the kernel's ephemeral range:
    one found by binding port 0 comes from that range, where another process's outgoing
    connection may take it before the server listens (cauce's ``free_ports``, see there)."""
    from cauce.cluster import free_ports

    return free_ports(1)[0]


def job_ids(env: Mapping[str, str]) -> list[str]:
    """The ids of the jobs in ``$CAUCE_HOME``'s history, oldest first ([] before the first)."""
    import sqlite3

    db = Path(env["CAUCE_HOME"]) / "history.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)  # a driver may be creating the schema
    try:
        return [row[0] for row in conn.execute("select id from jobs order by created_at")]
    except sqlite3.OperationalError as exc:  # the driver is still creating the schema
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def running(pid: int) -> bool:
    """True while ``pid`` runs; a zombie does not."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def gone(pids: Sequence[int], within: float = 15.0) -> bool:
    """True once none of ``pids`` is running (zombies count as gone) within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(running(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def fenced_blocks(text: str, language: str, where: str) -> list[tuple[int, str]]:
    """The ```LANGUAGE blocks of a Markdown text, in order: the line of each block's first line
    (from 1) and its text. A fence indented in a list item has that indentation taken off its
    lines. A block never closed raises ValueError naming ``where`` and its line."""
    fence = re.compile(r"^(?P<indent>[ \t]*)```" + re.escape(language) + r"[ \t]*$")
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = fence.match(lines[i])
        i += 1
        if match is None:
            continue
        indent, start, body = match["indent"], i, []
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line)
            i += 1
        if i == len(lines):
            raise ValueError(f"{where}:{start}: ```{language} block is never closed")
        i += 1
        blocks.append((start + 1, "\n".join(body) + "\n"))
    return blocks
