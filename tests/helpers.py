"""Helpers for tests that run the real `cauce` CLI."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

BIN = Path(__file__).parent / "bin"
ROOT = Path(__file__).parent.parent


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


def write_job(folder: Path, text: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def py(script: str, *args: object) -> str:
    """A shell command that runs one of tests/bin with this interpreter, quoted for YAML."""
    parts = [sys.executable, str(BIN / script), *(str(a) for a in args)]
    return json.dumps(shlex.join(parts))
