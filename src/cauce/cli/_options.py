"""Command-line options backed by environment variables: one helper for every command.

``env_option(parser, "--port", env="CAUCE_SERVE_PORT", type=int, default="8080", help=...)``
declares ``--port``; when it is not on the command line, ``$CAUCE_SERVE_PORT`` gives its value,
then ``default``. An environment variable set to the empty string counts as unset, everywhere.
A bad value from the environment is reported like a bad option, naming the variable:
``error: argument --port: invalid int value: 'x' (from $CAUCE_SERVE_PORT)``, exit 2.

Flags (``flag=True``) read ``1``, ``true``, ``yes``, ``on`` as set and ``0``, ``false``,
``no``, ``off`` as unset (any case); anything else is an error. A positional argument with an
``env`` becomes optional when the variable is set; an option with ``required=True`` is required
only when its variable is not set. ``--help`` ends each such help text with ``[env NAME]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["env_default", "env_option", "port_number"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_default(name: str, default: str | None = None) -> str | None:
    """``$name`` if it is set and not empty, else ``default``."""
    return os.environ.get(name) or default


class _FromEnv(str):
    """A default read from the environment; remembers the variable for error messages."""

    env: str

    def __new__(cls, value: str, env: str) -> _FromEnv:
        self = super().__new__(cls, value)
        self.env = env
        return self


def _typed(
    convert: Callable[[str], Any], name: str, choices: Sequence[Any] | None = None
) -> Callable[[str], Any]:
    """``convert``, whose error names the variable when the value came from it. argparse does
    not check a default against ``choices``: this does, for a value from the environment."""

    def parse(text: str) -> Any:
        if not isinstance(text, _FromEnv):
            return convert(text)
        try:
            value = convert(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            if isinstance(exc, argparse.ArgumentTypeError):
                raise argparse.ArgumentTypeError(f"{exc} (from ${text.env})") from None
            raise argparse.ArgumentTypeError(
                f"invalid {name} value: {str(text)!r} (from ${text.env})"
            ) from None
        if choices is not None and value not in choices:
            listed = ", ".join(map(repr, choices))
            raise argparse.ArgumentTypeError(
                f"invalid choice: {str(text)!r} (choose from {listed}) (from ${text.env})"
            )
        return value

    parse.__name__ = name  # argparse names the type in its own messages
    return parse


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"must be one of {', '.join(_TRUE + _FALSE)}, got {str(text)!r}"
    )


class _EnvFlag(argparse.Action):
    """``store_true`` whose default may be a string from the environment (parsed lazily)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, True)


def env_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *flags: str,
    env: str,
    help: str,
    default: str | None = None,
    type: Callable[[str], Any] | None = None,
    flag: bool = False,
    required: bool = False,
    **kwargs: Any,
) -> argparse.Action:
    """Add an option (or a positional argument) whose default comes from ``$env``.

    ``default`` is a string, parsed with ``type`` like a value on the command line. ``flag``
    makes a ``store_true`` option. Other keyword arguments go to ``add_argument``.
    """
    raw = env_default(env)
    value: str | None = _FromEnv(raw, env) if raw is not None else default
    text = f"{help} [env {env}]" if help else f"[env {env}]"
    if flag:
        return parser.add_argument(
            *flags,
            action=_EnvFlag,
            default=value if value is not None else False,
            type=_typed(_flag, "flag"),
            help=text,
            **kwargs,
        )
    if value is not None and default is not None and help:
        text = f"{help} (default {default}) [env {env}]"
    convert = type or str
    kwargs["type"] = _typed(convert, getattr(convert, "__name__", "value"), kwargs.get("choices"))
    positional = not flags[0].startswith("-")
    if positional:
        if value is not None:
            kwargs["nargs"] = "?"
    elif required and value is None:
        kwargs["required"] = True
    return parser.add_argument(*flags, default=value, help=text, **kwargs)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: any free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port from 0 to 65535 (0 picks a free one), got {text!r}"
        )
    return value
