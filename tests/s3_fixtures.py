"""An S3 store for tests: moto's server on 127.0.0.1 (a real HTTP S3 API, not a mock of the
client), and an environment that points the S3 clients (s3fs, pyarrow, boto3) at it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from helpers import free_port

#: What a task on a host with access to the store has in its environment.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module", name="endpoint")
def endpoint_fixture() -> Iterator[str]:
    """The URL of a moto server that lives as long as the test module."""
    pytest.importorskip("moto")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(name="s3_store")
def s3_store_fixture(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An s3fs filesystem on the store; credentials and endpoint in this process's environment,
    as a task would get them."""
    s3fs = pytest.importorskip("s3fs")
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem()
    s3fs.S3FileSystem.clear_instance_cache()
