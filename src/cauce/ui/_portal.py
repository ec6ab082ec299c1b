"""The running portal, for the CLI: ``cauce ui`` writes ``$CAUCE_HOME/ui.json`` (its URL, pid
and history) while it runs; ``cauce show``, ``cauce trials`` and the pipeline summary read it
to print the page of what they show, or the command that starts a portal."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from cauce._util.files import atomic_write_text
from cauce.history import cauce_home, process_stamp

__all__ = ["PORTAL_FILE", "portal_hint", "portal_url", "remove_portal", "write_portal"]

PORTAL_FILE = "ui.json"


def _file(home: Path | None) -> Path:
    return (home or cauce_home()) / PORTAL_FILE


def write_portal(url: str, history: str, home: Path | None = None) -> Path:
    path = _file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    data = {"url": url, "pid": pid, "start": process_stamp(pid), "history": history}
    atomic_write_text(path, json.dumps(data) + "\n")
    return path


def remove_portal(home: Path | None = None) -> None:
    path = _file(home)
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def portal_url(path: str = "", home: Path | None = None) -> str | None:
    """The running portal's URL of ``path`` (``/jobs/ID``), or None when none runs."""
    try:
        data = json.loads(_file(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    if data.get("start") is None or process_stamp(data["pid"]) != data.get("start"):
        return None  # gone (or its pid taken by another process)
    return str(data.get("url", "")).rstrip("/") + path


def portal_hint(*segments: str, home: Path | None = None) -> str:
    """One line for the CLI: the portal's page of ``segments`` (``"jobs", ID``), or how to
    start the portal."""
    path = "".join("/" + quote(s, safe="") for s in segments)
    url = portal_url(path, home)
    if url is not None:
        return f"portal:    {url}"
    return f"portal:    cauce ui   (then open {path})"
