"""The portal's routes: a request in, a response out; read-only (GET and HEAD, and the login
form's POST). Anything not routed, and any id, name or task not in the store, is a 404."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote

from cauce.history import HistoryStore
from cauce.ui import _jobs, _pipeline_pages, _study_pages
from cauce.ui._auth import COOKIE, host_ok, token_ok
from cauce.ui._html import e, page
from cauce.ui._http import BadRequest, NotFound, Request, Response, html_response, json_response

__all__ = ["Portal"]

log = logging.getLogger(__name__)

_SEG = "([^/]+)"
_STATIC = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}


class Portal:
    """Thread-safe: each request reads through its own connection. ``host`` is the address the
    server listens on: without a token, only requests that name it (or loopback) are answered."""

    def __init__(
        self, store: HistoryStore, home: Path, token: str | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.store = store
        self.home = home
        self.token = token
        self.host = host
        s, eng, h = store, store.engine, home
        routes: list[tuple[str, Callable[..., Response]]] = [
            ("/", lambda r: Response(302, "text/plain", b"", {"Location": "/jobs"})),
            ("/jobs", lambda r: _jobs.jobs_list(s, r)),
            ("/api/jobs", lambda r: _jobs.jobs_api(s, r)),
            (f"/jobs/{_SEG}", lambda r, j: _jobs.job_page(s, r, j)),
            (f"/api/jobs/{_SEG}", lambda r, j: _jobs.job_api(s, r, j)),
            (f"/jobs/{_SEG}/metrics.csv", lambda r, j: _jobs.metrics_csv(s, r, j)),
            (f"/jobs/{_SEG}/logs/{_SEG}/{_SEG}", lambda r, *a: _jobs.log_file(s, r, *a)),
            (f"/api/jobs/{_SEG}/logs/{_SEG}/{_SEG}", lambda r, *a: _jobs.log_api(s, r, *a)),
            ("/studies", lambda r: _study_pages.studies_list(eng, r)),
            (f"/studies/{_SEG}", lambda r, n: _study_pages.study_page(eng, r, n)),
            (f"/api/studies/{_SEG}/curves", lambda r, n: _study_pages.study_curves(eng, r, n)),
            (f"/api/studies/{_SEG}/params", lambda r, n: _study_pages.study_params(eng, r, n)),
            ("/pipelines", lambda r: _pipeline_pages.pipelines_list(h, r)),
            (f"/pipelines/{_SEG}", lambda r, n: _pipeline_pages.pipeline_page(h, r, n)),
            (
                f"/pipelines/{_SEG}/models/{_SEG}/{_SEG}",
                lambda r, *a: _pipeline_pages.model_page(h, r, *a),
            ),
            (f"/static/{_SEG}", lambda r, name: self._static(name)),
        ]
        self._routes = [(re.compile(pattern + "$"), view) for pattern, view in routes]

    def handle(self, req: Request) -> Response:
        try:
            return self._handle(req)
        except NotFound as exc:
            return self._not_found(req, str(exc))
        except BadRequest as exc:
            if req.path.startswith("/api/"):
                return json_response({"error": str(exc)}, 400)
            return html_response(page("Bad request", f"<p>{e(str(exc))}</p>"), 400)

    def _handle(self, req: Request) -> Response:
        if not self.token and not host_ok(req.headers, self.host):  # no DNS rebinding
            return Response(403, "text/plain", b"this portal answers to its own address only")
        if req.path == "/login":
            return self._login(req)
        if req.path.startswith("/static/"):
            return self._route(req)  # no secrets in them; the login page needs its CSS
        if not token_ok(req.headers, self.token):
            if req.path.startswith("/api/") or req.method not in ("GET", "HEAD"):
                return json_response({"error": "a token is needed (Authorization: Bearer)"}, 401)
            return html_response(_login_form(req.path, ""), 401)
        if req.method not in ("GET", "HEAD"):
            return Response(405, "text/plain", b"read-only", {"Allow": "GET, HEAD"})
        return self._route(req)

    def _route(self, req: Request) -> Response:
        raw = req.path
        if "\\" in raw or any(seg in ("..", ".") for seg in unquote(raw).split("/")):
            raise NotFound("no such page")
        for pattern, view in self._routes:
            found = pattern.match(raw)
            if found:
                args = [unquote(g) for g in found.groups()]
                if any(a in ("", ".", "..") or "/" in a for a in args):
                    raise NotFound("no such page")
                return view(req, *args)
        raise NotFound("no such page")

    def _static(self, name: str) -> Response:
        if name not in _STATIC:
            raise NotFound("no such file")
        data = resources.files("cauce.ui").joinpath("static", name).read_bytes()
        return Response(200, _STATIC[name], data, {"Cache-Control": "max-age=300"})

    def _not_found(self, req: Request, why: str) -> Response:
        if req.path.startswith("/api/"):
            return json_response({"error": why}, 404)
        return html_response(page("Not found", f"<p>{e(why)}</p>"), 404)

    def _login(self, req: Request) -> Response:
        if req.method != "POST":
            return html_response(_login_form(_local_path(req.arg("next", "/jobs")), ""))
        form = parse_qs(req.body.decode("utf-8", errors="replace"))
        given = (form.get("token") or [""])[0]
        target = _local_path((form.get("next") or ["/jobs"])[0])
        if self.token and token_ok({"Authorization": f"Bearer {given}"}, self.token):
            cookie = f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/"
            return Response(303, "text/plain", b"", {"Location": target, "Set-Cookie": cookie})
        return html_response(_login_form(target, "wrong token"), 401)


def _local_path(target: str) -> str:
    """``target`` if it is a path on this portal, else ``/``: one leading slash, no backslash
    (browsers read ``/\\x`` as ``//x``, another host), no control characters (header injection)."""
    bad = (
        not target.isascii()
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    )
    return target if target.startswith("/") and not target.startswith("//") and not bad else "/"


def _login_form(target: str, error: str) -> str:
    note = f'<p class="error">{e(error)}</p>' if error else ""
    body = (
        f"{note}<p>This portal needs its token (the --token of cauce ui).</p>"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{e(target)}">'
        '<label>token <input type="password" name="token" autofocus></label> '
        "<button>sign in</button></form>"
    )
    return page("Sign in", body)
