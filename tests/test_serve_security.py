"""`cauce serve` exposed: a bearer token, --insecure, TLS, bounded request heads, --ready-file.

Every server here is a real `cauce serve` process; the clients are httpx, tritonclient and raw
sockets (for clients that misbehave on purpose).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from helpers import cauce
from test_serve_support import ServerProcess, make_models, serve_env

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.framework

MODEL = "flights-synthetic"
TOKEN = "t0ken-with-some-entropy_42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("models"))


def _body() -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "categorical", "datatype": "INT64", "shape": [1, 6], "data": [1] * 6},
            {"name": "numeric", "datatype": "FP32", "shape": [1, 9], "data": [0.5] * 9},
        ]
    }


# -- the token ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """On 0.0.0.0 (allowed: it has a token), the token read from a file."""
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    args = ("--host", "0.0.0.0", "--token-file", str(token_file))
    with ServerProcess(models["flights"], *args) as server:
        yield server


def test_a_token_guards_everything_but_health(guarded: ServerProcess) -> None:
    url = guarded.url.replace("0.0.0.0", "127.0.0.1")
    with httpx.Client(base_url=url, timeout=30) as client:
        for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
            assert client.get(path).status_code == 200, path
        assert client.get("/v2/openapi.json").status_code == 200
        for path in ("/v2", f"/v2/models/{MODEL}", "/metrics"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = client.get(path, headers=headers)
                assert r.status_code == 401, (path, headers, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert "Authorization: Bearer" in r.json()["error"]
            assert client.get(path, headers=AUTH).status_code == 200, path
        infer = f"/v2/models/{MODEL}/infer"
        assert client.post(infer, json=_body()).status_code == 401
        r = client.post(infer, json=_body(), headers={"authorization": f"bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        assert client.post(f"/v2/models/{MODEL}/predict", json=[{}]).status_code == 401
        assert "cauce_serve_errors_total" in client.get("/metrics", headers=AUTH).text


def test_tritonclient_sends_the_token(guarded: ServerProcess) -> None:
    tc = pytest.importorskip("tritonclient.http")
    client = tc.InferenceServerClient(url=guarded.hostport.replace("0.0.0.0", "127.0.0.1"))
    try:
        inputs = []
        for item in _body()["inputs"]:
            tensor = tc.InferInput(item["name"], item["shape"], item["datatype"])
            dtype = np.int64 if item["datatype"] == "INT64" else np.float32
            tensor.set_data_from_numpy(np.array(item["data"], dtype).reshape(item["shape"]))
            inputs.append(tensor)
        with pytest.raises(tc.InferenceServerException, match=r"401|token"):
            client.infer(MODEL, inputs)
        result = client.infer(
            MODEL, inputs, headers=dict(AUTH)
        )  # tritonclient adds to the dict it is given
        assert result.as_numpy("probability").shape == (1,)
    finally:
        client.close()


def test_a_public_address_without_a_token_is_refused(
    models: dict[str, Path], cauce_env: dict[str, str]
) -> None:
    done = cauce(
        ["serve", str(models["flights"]), "--host", "0.0.0.0", "--port", "0"],
        serve_env(cauce_env),
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: refusing to serve on 0.0.0.0"), done.stderr
    assert "--token-file" in last and "--insecure" in last
    assert "Traceback" not in done.stderr


def test_insecure_serves_a_public_address_without_a_token(models: dict[str, Path]) -> None:
    with ServerProcess(models["flights"], "--host", "0.0.0.0", "--insecure") as server:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(f"{url}/v2/models/{MODEL}", timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--token", "a", "--token-file", "x"], {}, "give the token once"),
        (["--token-file", "/nonexistent/token"], {}, "cannot read --token-file"),
        ([], {"CAUCE_SERVE_TOKEN": "two words"}, "visible ASCII"),
        (["--tls-cert", "/nonexistent/cert.pem"], {}, "both a certificate and its key"),
        (["--ready-file", "/nonexistent/dir/ready"], {}, "its folder does not exist"),
        (["--max-delay-ms", "nan"], {}, "max_delay_ms must be a finite number, got nan"),
        (["--grace", "inf"], {}, "grace_s must be a finite number, got inf"),
        (["--workers", "100000000"], {}, "workers must be <= 256, got 100000000"),
        ([], {"CAUCE_SERVE_MAX_BATCH_SIZE": "1000000000"}, "max_batch_size must be <= 65536"),
        (["--header-timeout", "0"], {}, "header_timeout_s must be >= 0.1"),
    ],
)
def test_bad_security_and_numeric_settings_are_one_line_errors(
    models: dict[str, Path],
    cauce_env: dict[str, str],
    args: list[str],
    env: dict[str, str],
    says: str,
) -> None:
    done = cauce(
        ["serve", str(models["flights"]), "--port", "0", *args],
        {**serve_env(cauce_env), **env},
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr, done.stderr


# -- TLS ------------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, made here."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cauce test")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(
    models: dict[str, Path], tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    cert, key = _self_signed(tmp_path)
    env = {**serve_env(cauce_env), "CAUCE_SERVE_TOKEN": TOKEN}
    ready = tmp_path / "ready.json"
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--ready-file", str(ready))
    with ServerProcess(models["flights"], *args, env=env, ready=False) as server:
        assert server.url.startswith("https://127.0.0.1:"), server.log
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log
            time.sleep(0.1)
        assert json.loads(ready.read_text())["url"] == server.url
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=server.url, verify=trusted, timeout=30) as client:
            assert client.get("/v2/health/ready").status_code == 200
            r = client.post(f"/v2/models/{MODEL}/infer", json=_body(), headers=AUTH)
            assert r.status_code == 200, r.text
            assert len(r.json()["outputs"][0]["data"]) == 1
        with pytest.raises(httpx.ConnectError):  # the certificate is not trusted by default
            httpx.get(f"{server.url}/v2/health/live", timeout=30)
        plain = server.url.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):  # no plain HTTP on a TLS port
            httpx.get(f"{plain}/v2/health/live", timeout=30).raise_for_status()


def test_tls_with_a_key_that_does_not_match_is_refused(
    models: dict[str, Path], tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    cert, _ = _self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = _self_signed(tmp_path / "other")
    args = ["--tls-cert", str(cert), "--tls-key", str(other_key)]
    done = cauce(
        ["serve", str(models["flights"]), "--port", "0", *args], serve_env(cauce_env), timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: cannot use --tls-cert {cert}"), done.stderr


# -- bounded request heads ------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(models: dict[str, Path]) -> Iterator[ServerProcess]:
    # 3 s: a loaded host can stall a client (or the server) for a second between connecting
    # and sending a head, or between keep-alive requests; the cut-off tests still see it
    args = ("--header-timeout", "3", "--max-header-bytes", "2048")
    with ServerProcess(models["flights"], *args) as server:
        yield server


def _connect(server: ServerProcess) -> socket.socket:
    host, port = server.hostport.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (reading gives EOF or a reset)."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_a_client_that_trickles_its_headers_is_cut_off(strict: ServerProcess) -> None:
    """One header byte every 0.1 s: 600 bytes would take a minute; the server (head deadline
    3 s) closes the connection long before they are all sent."""
    with _connect(strict) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sent = 0
        try:
            for _ in range(600):
                sock.sendall(b"a")
                sent += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 600, "the server let the client trickle its headers for a minute"
        assert _closed(sock)


def test_a_client_that_sends_nothing_is_cut_off(strict: ServerProcess) -> None:
    with _connect(strict) as sock:
        assert _closed(sock)  # within the socket's 60 s timeout (the deadline is 3 s)


@pytest.mark.parametrize("chunks", [1, 8], ids=["at-once", "in-chunks"])
def test_oversized_headers_get_431(strict: ServerProcess, chunks: int) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 4000
    with _connect(strict) as sock:
        step = -(-len(head) // chunks)
        # the server may answer and close before the last chunk: what it said is still read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(0, len(head), step):
                sock.sendall(head[i : i + step])
            if chunks == 1:
                sock.sendall(b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_normal_requests_still_pass_the_limits(strict: ServerProcess) -> None:
    headers = {"X-Fine": "f" * 1000}
    with httpx.Client(base_url=strict.url, timeout=30) as client:
        for _ in range(3):  # keep-alive: each request's head gets its own deadline
            r = client.post(f"/v2/models/{MODEL}/infer", json=_body(), headers=headers)
            assert r.status_code == 200, r.text
            time.sleep(0.5)
        assert client.get("/v2/health/live").status_code == 200


# -- --ready-file ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_ready_file_names_a_server_that_answers(
    models: dict[str, Path], tmp_path: Path, cauce_env: dict[str, str], workers: str
) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text("stale, from an earlier run")
    argv = [sys.executable, "-m", "cauce", "serve", str(models["flights"]), "--port", "0"]
    argv += ["--ready-file", str(ready), "--workers", workers]
    log = (tmp_path / "serve.log").open("w")
    env = {**serve_env(cauce_env), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        doc: dict[str, Any] = {}
        while not doc:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            if ready.exists() and not ready.read_text().startswith("stale"):
                doc = json.loads(ready.read_text())
            else:
                time.sleep(0.1)
        assert set(doc) == {"url", "host", "port", "pid"}
        assert doc["pid"] == proc.pid and doc["host"] == "127.0.0.1" and doc["port"] > 0
        assert doc["url"] == f"http://127.0.0.1:{doc['port']}"
        # ready means ready: the first request after the file appears answers 200
        r = httpx.get(f"{doc['url']}/v2/health/ready", timeout=30)
        assert r.status_code == 200 and r.json() == {"ready": True}
        assert not list(tmp_path.glob(".ready.json.*"))  # no temporary file left
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not ready.exists()  # removed when the server stops
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
