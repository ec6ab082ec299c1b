"""``cauce``: thin commands over the public API.

Expected errors (:class:`~cauce.errors.CauceError`) print one line ``error: ...`` and exit with
the error's code (2 for a bad spec or a gang that can never fit); anything else is a bug and
prints a traceback. An option whose help in --help ends with ``[env NAME]`` can also be set by
that environment variable (most are declared with :func:`~cauce.cli._options.env_option`; an
empty variable counts as unset). Not every option has one (``cauce run --dry-run``, ``--param``,
the filters of ``cauce jobs``...): docs/running.md lists those that do.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from cauce.cli._colour import paint
from cauce.cli._options import env_default, env_option
from cauce.errors import CauceError

__all__ = ["env_default", "env_option", "main"]

#: Sub-command modules, each with ``register(subparsers)``; imported lazily so that one
#: command does not pay for another's imports. A module whose extra is missing is skipped.
_COMMANDS = (
    "cauce.cli._run",
    "cauce.cli._jobs",
    "cauce.cli._prepare",
    "cauce.cli._tune",
    "cauce.cli._serve",
    "cauce.cli._tensorboard",
    "cauce.cli._mlflow",
    "cauce.cli._doctor",
    "cauce.cli._ui",
    "cauce.cli._completion",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cauce",
        description="Run distributed training jobs, pipelines, studies and model servers.",
    )
    from cauce import __version__

    parser.add_argument("--version", action="version", version=f"cauce {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command not present in this version
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of ``argv`` (default: this process's command line) and return its exit
    code."""
    try:
        return _main(argv)
    finally:
        if argv is None:
            # The process ends now: the objects a command made (a study's trials, SQLAlchemy's
            # tables...) need no garbage collection. Python's collections at exit over them
            # took 0.2 to 0.9 s after the last line of 'cauce tune'; frozen, they are skipped.
            gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # psycopg warns of each connection it drops after the server went away, which the history
    # store says itself, once (shown with -v).
    if level >= logging.WARNING:
        logging.getLogger("psycopg").setLevel(logging.ERROR)
    try:
        code: int = args.func(args)
    except CauceError as exc:
        # one line per problem (every mistake of a spec file is reported at once)
        label = paint("error:", "red", sys.stderr)
        sys.stderr.writelines(f"{label} {line}\n" for line in str(exc).splitlines() or [""])
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{paint('error:', 'red', sys.stderr)} interrupted\n")
        return 130
    except BrokenPipeError:
        # `cauce logs ... | head`: the reader went away; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
