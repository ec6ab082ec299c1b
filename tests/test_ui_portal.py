"""The portal's pieces that need no browser: the file that tells the CLI where the portal
runs (a stale one is ignored), the hint without a portal, and the bind check."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from cauce.errors import SpecError
from cauce.history import HistoryStore, MetricRow
from cauce.ui import UiServer, check_bind, portal_hint, portal_url, serve_ui
from cauce.ui._jobs import MAX_POINTS
from cauce.ui._portal import remove_portal, write_portal
from helpers import cauce, free_port


def test_the_portal_file_names_a_live_portal_only(tmp_path: Path) -> None:
    assert portal_url("/jobs/x", tmp_path) is None
    assert portal_hint("jobs", "a b/c", home=tmp_path) == (
        "portal:    cauce ui   (then open /jobs/a%20b%2Fc)"
    )
    write_portal("http://127.0.0.1:8265", "sqlite:///h.db", tmp_path)
    assert portal_url("/jobs/x", tmp_path) == "http://127.0.0.1:8265/jobs/x"
    assert portal_hint("jobs", "a b/c", home=tmp_path) == (
        "portal:    http://127.0.0.1:8265/jobs/a%20b%2Fc"
    )
    # A portal that is gone, or whose pid now belongs to another process, is not named.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    path = tmp_path / "ui.json"
    for pid, start in ((int(gone.stdout), "1"), (os.getpid(), "12")):
        data = {**json.loads(path.read_text()), "pid": pid, "start": start}
        path.write_text(json.dumps(data))
        assert portal_url("/jobs", tmp_path) is None
    path.write_text("{not json")
    assert portal_url("/jobs", tmp_path) is None
    write_portal("http://127.0.0.1:8265", "sqlite:///h.db", tmp_path)
    remove_portal(tmp_path)
    assert not path.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "myhost"])
def test_beyond_loopback_a_token_is_needed(host: str) -> None:
    check_bind(host, "t0ken")
    with pytest.raises(SpecError, match=f"--host {host} would show the history"):
        check_bind(host, None)
    with pytest.raises(SpecError, match="--token TOKEN or \\$CAUCE_UI_TOKEN"):
        check_bind(host, "")


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[UiServer, HistoryStore]]:
    """A real portal over an empty store, default mode (loopback, no token)."""
    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    server = UiServer(store, tmp_path, port=0).start()
    try:
        yield server, store
    finally:
        server.close()
        store.close()


def _ask(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        given = headers or {}
        conn.putrequest(method, path, skip_host="Host" in given, skip_accept_encoding=True)
        for key, value in given.items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_a_bad_content_length_is_refused_before_any_read(ui: tuple[UiServer, HistoryStore]) -> None:
    url = ui[0].url
    for length, status in (("-1", 400), ("abc", 400), ("99999999", 413)):
        got = _ask(url, "/login", "POST", {"Content-Length": length})
        assert got[0] == status, (length, got)
    assert _ask(url, "/login", "POST", {"Content-Length": "0"})[0] == 401


def test_an_idle_connection_is_dropped(ui: tuple[UiServer, HistoryStore]) -> None:
    from cauce.ui._server import _Handler

    assert 0 < (_Handler.timeout or 0) <= 120


def test_a_failed_start_frees_the_port_and_close_without_start_returns(tmp_path: Path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    try:
        UiServer(store, tmp_path, port=0).close()  # never started: must not hang
        port = free_port()  # not one an outgoing connection may take meanwhile
        failed: list[BaseException] = []

        def off_main() -> None:  # signal.signal refuses threads other than the main one
            try:
                serve_ui(store, tmp_path, port=port)
            except BaseException as exc:  # kept without its traceback: no cycle via this frame
                failed.append(exc.with_traceback(None))

        thread = threading.Thread(target=off_main)
        thread.start()
        thread.join(30)
        assert failed and isinstance(failed[0], ValueError), failed
        assert not any(t.name == "cauce-ui" for t in threading.enumerate())
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # the portal's socket was closed
    finally:
        store.close()


def test_ipv6_loopback_binds(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    try:
        server = UiServer(store, tmp_path, host="::1", port=0).start()
        try:
            assert server.url.startswith("http://[::1]:")
            assert _ask(server.url, "/api/jobs")[0] == 200
        finally:
            server.close()
    finally:
        store.close()


def test_without_a_token_only_this_hosts_names_are_answered(
    ui: tuple[UiServer, HistoryStore],
) -> None:
    url = ui[0].url
    port = urlsplit(url).port
    for host in (f"127.0.0.1:{port}", "localhost:1", "LOCALHOST", "[::1]:8265"):
        assert _ask(url, "/api/jobs", headers={"Host": host})[0] == 200, host
    for host in ("evil.example:8265", "evil.example", "127.0.0.1.evil.example", "[::1"):
        status, _, body = _ask(url, "/api/jobs", headers={"Host": host})
        assert status == 403 and b"[" not in body, host


def test_the_login_goes_back_to_paths_of_this_portal_only(tmp_path: Path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path}/history.db")
    server = UiServer(store, tmp_path, port=0, token="s3cret").start()
    try:
        for target, location in (
            ("/studies?x=1", "/studies?x=1"),
            ("/\\evil.example", "/"),
            ("//evil.example", "/"),
            ("https://evil.example/", "/"),
            ("/\r\nSet-Cookie: a=b", "/"),
            ("/\u00e9", "/"),
        ):
            body = urlencode({"token": "s3cret", "next": target})
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            headers["Content-Length"] = str(len(body))
            parts = urlsplit(server.url)
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
            try:
                conn.request("POST", "/login", body, headers)
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 303, target
                assert resp.getheader("Location") == location, target
                assert resp.getheader("Set-Cookie", "").startswith("cauce_ui_token=s3cret;")
            finally:
                conn.close()
        status, _, page = _ask(server.url, "/login?next=/%5Cevil.example")
        assert status == 200 and b'name="next" value="/"' in page
    finally:
        server.close()
        store.close()


def _script_json(page: bytes, element_id: str) -> Any:
    start = page.index(f'id="{element_id}">'.encode()) + len(element_id) + 6
    return json.loads(page[start : page.index(b"</script>", start)], parse_constant=_no_constant)


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON: the page's JSON.parse would throw")


def test_non_finite_metrics_are_null_in_the_pages_json(ui: tuple[UiServer, HistoryStore]) -> None:
    server, store = ui
    store.create_job(id="j-inf", name="inf", status="succeeded")
    values = [1.0, float("inf"), float("-inf"), float("nan"), 0.5]
    rows = [MetricRow("worker-0", 0, i, 1.0e9 + i, "loss", v) for i, v in enumerate(values)]
    store.add_metrics("j-inf", rows)
    status, _, page = _ask(server.url, "/jobs/j-inf")
    assert status == 200
    points = _script_json(page, "metrics-data")["loss"][0]["points"]
    assert points == [[0, 1.0], [1, None], [2, None], [3, None], [4, 0.5]]
    assert b"p[1] !== null" in _ask(server.url, "/static/ui.js")[2]  # the chart skips them


def test_bad_numbers_in_a_query_are_a_400_not_a_500(
    ui: tuple[UiServer, HistoryStore], tmp_path: Path
) -> None:
    optuna = pytest.importorskip("optuna")
    server, store = ui
    store.create_job(id="j-log", name="log", status="succeeded")
    log_file = tmp_path / "w.log"
    log_file.write_text("line one\nline two\n")
    store.upsert_task(
        "j-log", "w", 0, role="worker", role_index=0, status="succeeded", log_path=str(log_file)
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="s", storage=store.url)
    logs = "/api/jobs/j-log/logs/w/0"
    assert json.loads(_ask(server.url, logs + "?offset=5")[2])["text"] == "one\nline two\n"
    for path in (
        logs + "?offset=99999999999999999999",
        logs + "?offset=abc",
        logs + "?offset=%C2%B2",  # "²".isdigit() is true, int("²") fails
        "/api/jobs?page=1e3",
        "/api/studies/s/curves?trials=100000000000000000000",
        "/api/studies/s/curves?trials=0,%C2%B2",
        "/api/studies/s/curves?trials=x",
    ):
        status, _, body = _ask(server.url, path)
        why = json.loads(body)["error"] if status == 400 else ""
        assert "must be a whole number" in why or "out of range" in why, (path, status, body)
    assert _ask(server.url, "/jobs?page=%C2%B2")[0] == 400  # an HTML page says it too
    assert _ask(server.url, "/jobs/j-log/logs/w/%C2%B2")[0] == 404  # an attempt is a path
    assert _ask(server.url, "/api/studies/s/curves?trials=0,1")[0] == 200


def test_a_long_series_is_thinned_in_the_page_and_the_csv_streams_whole(
    ui: tuple[UiServer, HistoryStore],
) -> None:
    server, store = ui
    store.create_job(id="j-long", name="long", status="succeeded")
    n = 5001
    store.add_metrics("j-long", [MetricRow("w", 0, i, 1.0e9, "loss", i / 2) for i in range(n)])
    status, _, page = _ask(server.url, "/jobs/j-long")
    points = _script_json(page, "metrics-data")["loss"][0]["points"]
    assert status == 200 and len(points) == MAX_POINTS
    assert points[0] == [0, 0.0] and points[-1] == [n - 1, (n - 1) / 2]
    assert [p[0] for p in points] == sorted({p[0] for p in points})
    status, headers, body = _ask(server.url, "/jobs/j-long/metrics.csv")
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    lines = body.decode().splitlines()
    assert lines[0] == "task,attempt,step,time,metric,value" and len(lines) == n + 1
    assert lines[-1] == f"w,0,{n - 1},1000000000.000,loss,{(n - 1) / 2!r}"


@pytest.mark.slow
def test_cli_ports_hosts_and_tokens_are_checked_before_anything_runs(
    cauce_env: dict[str, str],
) -> None:
    cases = (
        (["--port", "70000"], "argument --port: must be a port from 0 to 65535"),
        (["--port", "-5"], "argument --port: must be a port from 0 to 65535"),
        (["--token", "a b"], "--token must be 1 to 4096 visible ASCII characters (no spaces)"),
        (["--host", "999.1.1.1", "--token", "abc", "--port", "0"], "--host 999.1.1.1 is not an"),
    )
    for extra, said in cases:
        done = cauce(["ui", *extra], cauce_env, timeout=60)
        assert done.returncode == 2 and said in done.stderr, (extra, done.stderr)
        assert done.stderr.splitlines()[-1].startswith("error: ") and "Traceback" not in done.stderr
        assert "choose another --port" not in done.stderr and not done.stdout
