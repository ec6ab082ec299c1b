"""The checks before a job starts: its workdir exists, its gang can ever fit (the error names the
job file), and its commands exist, where the driver can look: on the local cluster, whose tasks
start on this host with the job's PATH and workdir.

A failure no restart mends is better refused at once (exit 2) than started, failed with exit
127 and retried. Only a plain first word is looked up: a command whose first word the shell
itself provides (``cd``, ``exec``, ``export``...) or expands is left to the shell.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping

from cauce._util.pycommand import PYTHON_FORMS, python_command
from cauce.cluster.api import Cluster, GangRequest
from cauce.errors import PlacementError, SpecError, SpecErrors
from cauce.gang._plan import base_env, task_argv
from cauce.spec import JobSpec, RoleSpec

__all__ = ["missing_commands", "preflight"]

#: words the shell itself provides (builtins, keywords): not programs to look up
_SHELL_TEXT = (
    ". : [ alias bg break builtin case cd command continue eval exec exit export false fg for "
    "function getopts hash if jobs kill let local read readonly return set shift source test "
    "times trap true type ulimit umask unalias unset until wait while { ! (("
)
_SHELL_WORDS = frozenset(_SHELL_TEXT.split())
_PLAIN = set("|&;<>()$`*?[]#~{}!=\\\"'")


def _program(argv: tuple[str, ...]) -> str | None:
    """The program a task's argv runs first, if cauce can tell without a shell."""
    if len(argv) == 3 and argv[:2] == ("/bin/sh", "-c"):
        try:
            words = shlex.split(argv[2])
        except ValueError:
            return None
        while words and "=" in words[0] and not words[0].startswith("="):
            words = words[1:]  # VAR=value before the program
        if not words or any(ch in _PLAIN for ch in words[0]) or words[0] in _SHELL_WORDS:
            return None
        return words[0]
    return argv[0] if argv else None


def _problem(program: str, path: str, cwd: str) -> str:
    """Why ``program`` cannot be run from ``cwd`` with ``path``, or ""."""
    if "/" in program:
        full = os.path.join(cwd, program)
        if not os.path.exists(full):
            return f"runs {program!r}, which does not exist (relative to workdir {cwd})"
        if os.path.isdir(full) or not os.access(full, os.X_OK):
            return (
                f"runs {program!r}, which is not executable: chmod +x it, or run it with its "
                "interpreter (python script.py)"
            )
        return ""
    for folder in path.split(os.pathsep):
        full = os.path.join(cwd, folder or ".", program)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return ""
    return (
        f"runs {program!r}, which is not found on the task's PATH; install it, or give its "
        "full path"
    )


def missing_commands(spec: JobSpec, environ: Mapping[str, str]) -> list[SpecError]:
    """One error per role whose command names a program that cannot run on this host."""
    errors = []
    inherited = base_env(environ).get("PATH", "")
    for role in spec.roles:
        argv = task_argv(spec.command_for(role))
        if spec.preload and python_command(argv) is None:
            errors.append(
                SpecError(
                    _field(spec, role),
                    f"runs {argv[0]!r}, which preload cannot start warm: it needs "
                    f"{PYTHON_FORMS}; run the script with python, or remove preload",
                    source=spec.source,
                )
            )
            continue
        program = _program(argv)
        if program is None:
            continue
        path = dict(role.env).get("PATH") or dict(spec.env).get("PATH") or inherited
        problem = _problem(program, path, spec.workdir)
        if problem:
            errors.append(SpecError(_field(spec, role), problem, source=spec.source))
    return errors


def _field(spec: JobSpec, role: RoleSpec) -> str:
    return f"roles.{role.name}.command" if role.command is not None else "command"


def preflight(
    spec: JobSpec,
    cluster: Cluster,
    request: GangRequest,
    environ: Mapping[str, str],
    *,
    dry_run: bool = False,
) -> list[str]:
    """Refuse a job that cannot start (a missing workdir, a gang that can never fit, a command
    that does not exist); the lines to show before it starts (``note: ...``; in a dry run,
    ``warning: ...`` for each missing command instead of the refusal)."""
    if not os.path.isdir(spec.workdir):
        raise SpecError(
            "workdir",
            f"folder {spec.workdir!r} does not exist; create it or fix workdir "
            "(relative paths start at the job file's folder)",
            source=spec.source,
        )
    try:
        cluster.check(request)
    except PlacementError as exc:
        if not spec.source:
            raise
        raise PlacementError(f"{spec.source}: {exc}") from None
    lines = [f"note: {note}" for note in cluster.notes(request)]
    if spec.preload and not cluster.starts_here:
        lines.append(f"note: preload is for the local cluster; on {cluster.name} tasks start cold")
    missing = missing_commands(spec, environ) if cluster.starts_here else []
    if dry_run:
        return lines + [f"warning: {error} (the job would be refused)" for error in missing]
    SpecErrors.raise_any(missing)
    return lines
