"""``cauce completion bash|zsh``: a completion script for the shell, made from the parser itself
(subcommands, their options and the choices of those options), so it never lists a command or
an option that does not exist. Positional arguments complete as file names.

    eval "$(cauce completion bash)"        # in ~/.bashrc
    eval "$(cauce completion zsh)"         # in ~/.zshrc (through zsh's bashcompinit)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

__all__ = ["completion_script", "register"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "completion",
        help='print a shell completion script: eval "$(cauce completion bash)"',
        description="Print a completion script for bash or zsh, to eval in the shell's rc file.",
    )
    parser.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    parser.set_defaults(func=cmd_completion)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    """Every option string of ``parser``, and the choices of those that have some."""
    options: list[str] = []
    choices: dict[str, list[str]] = {}
    for action in parser._actions:
        options += action.option_strings
        if action.option_strings and action.choices is not None:
            for flag in action.option_strings:
                choices[flag] = [str(c) for c in action.choices]
    return options, choices


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The script for ``shell`` (bash or zsh) completing ``parser``'s commands and options."""
    commands = _subcommands(parser)
    top, _ = _options(parser)
    cases: list[str] = []
    for name, sub in sorted(commands.items()):
        options, choices = _options(sub)
        positional = [a for a in sub._actions if not a.option_strings and a.dest != "help"]
        words = list(options)
        if positional and positional[0].choices is not None:
            words += [str(c) for c in positional[0].choices]
        values = "".join(
            f"                {flag}) COMPREPLY=($(compgen -W {shlex.quote(' '.join(c))} "
            f'-- "$cur")); return ;;\n'
            for flag, c in sorted(choices.items())
        )
        files = "" if positional and positional[0].choices is not None else " -f"
        cases.append(
            f"        {name})\n"
            f'            case "$prev" in\n{values}            esac\n'
            f'            if [[ "$cur" == -* ]]; then\n'
            f"                COMPREPLY=($(compgen -W {shlex.quote(' '.join(words))} "
            f'-- "$cur"))\n'
            f"            else\n"
            f"                COMPREPLY=($(compgen{files} -W "
            f'{shlex.quote(" ".join(w for w in words if not w.startswith("-")))} -- "$cur"))\n'
            f"            fi ;;\n"
        )
    script = (
        "# cauce completion (written by `cauce completion`); eval it in the shell's rc file.\n"
        "_cauce() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"\n'
        "    local i command=\n"
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
        '        case "${COMP_WORDS[i]}" in -*) ;; *) command="${COMP_WORDS[i]}"; break ;; esac\n'
        "    done\n"
        '    if [[ -z "$command" ]]; then\n'
        f"        COMPREPLY=($(compgen -W {shlex.quote(' '.join([*sorted(commands), *top]))} "
        '-- "$cur"))\n'
        "        return\n"
        "    fi\n"
        '    case "$command" in\n' + "".join(cases) + "    esac\n"
        "}\n"
    )
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script + "complete -o default -F _cauce cauce\n"


def cmd_completion(args: argparse.Namespace) -> int:
    from cauce.cli.main import build_parser

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0
