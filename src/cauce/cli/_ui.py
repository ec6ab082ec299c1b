"""``cauce ui``: the read-only web portal over the history store (docs/ui.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cauce.cli._options import env_option, port_number

__all__ = ["register"]


def register(sub: Any) -> None:
    ui = sub.add_parser(
        "ui",
        help="a web portal over jobs, studies, pipelines and models (read-only)",
        description="Serve read-only web pages over the history store: jobs, their logs and "
        "metrics, studies, pipelines and models. Listens on 127.0.0.1 unless told otherwise; "
        "another address needs a token.",
    )
    env_option(ui, "--host", env="CAUCE_UI_HOST", default="127.0.0.1", help="address to bind")
    env_option(
        ui, "--port", env="CAUCE_UI_PORT", type=port_number, default="8265", help="port (0: any)"
    )
    env_option(
        ui,
        "--token",
        env="CAUCE_UI_TOKEN",
        help="required of every client (bearer header or the login form); needed with a --host "
        "other than loopback",
    )
    env_option(ui, "--history", env="CAUCE_HISTORY", help="history store URL")
    ui.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from cauce.history import cauce_home, open_store
    from cauce.ui import check_bind, serve_ui

    if args.token:
        from cauce.serve.api import check_token

        check_token(args.token, "--token")  # the rule of cauce serve: it travels in a header
    check_bind(args.host, args.token)  # before the store is opened: fail fast
    store = open_store(args.history)

    def ready(url: str) -> None:
        sys.stdout.write(f"cauce ui: {url}  (Ctrl-C to stop)\n")
        sys.stdout.flush()

    try:
        serve_ui(store, cauce_home(), host=args.host, port=args.port, token=args.token, ready=ready)
    finally:
        store.close()
    return 0
