"""HTML of the portal: escaping, the page frame, tables and small formats. Everything a user
wrote (job names, params, log lines) goes through :func:`e`; JSON put into a page goes
through :func:`json_script`, which cannot close its ``<script>``."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from cauce.ui._http import to_json

__all__ = [
    "e",
    "fmt_seconds",
    "fmt_time",
    "fmt_value",
    "json_script",
    "link",
    "page",
    "pager",
    "q",
    "status_badge",
    "table",
]

_NAV = (("/jobs", "Jobs"), ("/studies", "Studies"), ("/pipelines", "Pipelines"))


def e(value: object) -> str:
    """Escaped text (quotes too: safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def q(value: object) -> str:
    """One URL path segment."""
    return quote(str(value), safe="")


def link(href: str, text: object, **attrs: str) -> str:
    extra = "".join(f' {k.rstrip("_")}="{e(v)}"' for k, v in attrs.items())
    return f'<a href="{e(href)}"{extra}>{e(text)}</a>'


def fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def status_badge(status: str) -> str:
    return f'<span class="st st-{e(status)}" data-status="{e(status)}">{e(status)}</span>'


def json_script(element_id: str, value: Any) -> str:
    """Data for the page's scripts, in a ``<script type=application/json>`` (``<`` escaped, so
    a ``</script>`` inside a name stays text)."""
    text = to_json(value, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{e(element_id)}">{text}</script>'


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, tbody_id: str = "", cls: str = ""
) -> str:
    """A table; ``headers`` are escaped here, the cells are HTML already (escape them)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    tid = f' id="{e(tbody_id)}"' if tbody_id else ""
    return (
        f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody{tid}>{body}</tbody></table>'
    )


def pager(base: str, params: Mapping[str, str], page: int, pages: int) -> str:
    def href(n: int) -> str:
        return base + "?" + urlencode({**{k: v for k, v in params.items() if v}, "page": str(n)})

    parts = [f'<nav class="pager" data-page="{page}" data-pages="{pages}">']
    if page > 1:
        parts.append(link(href(page - 1), "< newer", rel="prev"))
    parts.append(f"<span>page {page} of {max(pages, 1)}</span>")
    if page < pages:
        parts.append(link(href(page + 1), "older >", rel="next"))
    parts.append("</nav>")
    return " ".join(parts)


def page(title: str, body: str, *, script: str = "") -> str:
    nav = " ".join(link(href, text) for href, text in _NAV)
    js = '<script src="/static/ui.js" defer></script>' if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} - cauce</title>"
        f'<link rel="stylesheet" href="/static/ui.css">{js}</head>'
        f'<body data-page="{e(script)}"><header><b>cauce</b> {nav}</header>'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )
