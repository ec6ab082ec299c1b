"""The portal: read-only web pages over the history store, the studies in it, and the
pipelines' folders. ``cauce ui`` serves it; see docs/ui.md.

    server = cauce.ui.UiServer(cauce.history.open_store(), cauce.history.cauce_home()).start()
    print(server.url); ...; server.close()
"""

from cauce.ui._auth import bind_error, check_bind, is_loopback
from cauce.ui._portal import portal_hint, portal_url
from cauce.ui._server import UiServer, serve_ui

__all__ = [
    "UiServer",
    "bind_error",
    "check_bind",
    "is_loopback",
    "portal_hint",
    "portal_url",
    "serve_ui",
]
