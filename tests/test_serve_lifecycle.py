"""`cauce serve` as a process: SIGTERM under load, several workers, a full queue, bad starts."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from helpers import cauce
from test_serve_support import ServerProcess, make_models, serve_env

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.framework

_STOPPED = re.compile(r"stopped: (\d+) inference requests accepted, (\d+) answered")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("models"), ("flights", "heavy"))


def _body(rows: int = 1) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "categorical",
                "datatype": "INT64",
                "shape": [rows, 6],
                "data": [1] * 6 * rows,
            },
            {"name": "numeric", "datatype": "FP32", "shape": [rows, 9], "data": [0.5] * 9 * rows},
        ]
    }


class Load:
    """``clients`` threads, each with its own connection, sending requests until stopped or
    until the server is gone. Records every status code and every transport error."""

    def __init__(self, url: str, model: str, clients: int, rows: int = 1) -> None:
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._url = f"{url}/v2/models/{model}/infer"
        self._body = _body(rows)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    r = client.post(self._url, json=self._body)
                except httpx.TransportError as exc:
                    with self._lock:
                        self.errors[type(exc).__name__] += 1
                    if isinstance(exc, httpx.ConnectError):
                        return  # the server no longer listens
                    continue
                with self._lock:
                    self.statuses[r.status_code] += 1

    def answered(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def _workers(pid: int) -> set[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker)."""
    found = set()
    for p in psutil.Process(pid).children():
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                found.add(p.pid)
        except psutil.Error:  # gone, or a zombie not yet reaped
            pass
    return found


def _tree(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_answers_every_accepted_request(
    models: dict[str, Path], workers: int
) -> None:
    with ServerProcess(models["heavy"], "--workers", str(workers), "--grace", "20") as server:
        tree = _tree(server.proc.pid)
        assert len(tree) >= workers  # the supervisor and its workers, or the one process
        load = Load(server.url, "heavy-synthetic", clients=16)
        deadline = time.monotonic() + 30
        while load.answered() < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.proc.send_signal(15)
        code = server.proc.wait(40)
        load.join()
    assert code == 0, server.log
    # no process of the server's tree is left (multiprocessing's resource tracker ends once
    # its pipe closes: a moment after the supervisor, longer on a busy host)
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    stops = [tuple(map(int, m.groups())) for m in map(_STOPPED.search, server.lines) if m]
    assert len(stops) == workers, server.log
    accepted = sum(a for a, _ in stops)
    answered = sum(b for _, b in stops)
    assert accepted == answered, server.log
    # Every request the server read got its 200 back to the client; nothing else came back.
    assert set(load.statuses) == {200}, load.statuses
    assert load.statuses[200] == answered, (load.statuses, stops, load.errors)
    assert set(load.errors) <= {"ConnectError", "RemoteProtocolError", "ReadError"}, load.errors


@pytest.mark.slow
def test_several_workers_share_the_port_and_the_metrics(models: dict[str, Path]) -> None:
    with ServerProcess(models["flights"], "--workers", "2") as server:
        pids = _workers(server.proc.pid)
        assert len(pids) == 2, server.log
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(40):
                client.post("/v2/models/flights-synthetic/infer", json=_body())
                client.close()  # a new connection each time, so both workers take some
                client = httpx.Client(base_url=server.url, timeout=30)
            text = client.get("/metrics").text
            client.close()
        series = 'cauce_serve_requests_total{code="200",endpoint="infer",model="flights-synthetic"}'
        total = re.search(re.escape(series) + r" (\S+)", text)
        assert total is not None and float(total[1]) == 40.0, text
        # A killed worker is replaced.
        victim = psutil.Process(sorted(pids)[0])
        victim.kill()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _workers(server.proc.pid)
            if len(now) == 2 and victim.pid not in now:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the killed worker was not replaced: {server.log}")
        server.wait_ready()


@pytest.mark.slow
def test_a_full_queue_answers_503_with_retry_after(models: dict[str, Path]) -> None:
    with ServerProcess(models["heavy"], "--max-queue", "1", "--max-batch-size", "1") as server:
        load = Load(server.url, "heavy-synthetic", clients=12, rows=64)
        deadline = time.monotonic() + 30
        while load.statuses[503] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        load.join()
        assert load.statuses[503] >= 3, load.statuses
        assert set(load.statuses) <= {200, 503}, load.statuses
        r = None
        with httpx.Client(timeout=30) as client:
            for _ in range(50):  # find one 503 to look at its headers
                blockers = [
                    threading.Thread(
                        target=client.post,
                        args=(f"{server.url}/v2/models/heavy-synthetic/infer",),
                        kwargs={"json": _body(64)},
                    )
                    for _ in range(3)
                ]
                for t in blockers:
                    t.start()
                r = client.post(f"{server.url}/v2/models/heavy-synthetic/infer", json=_body(64))
                for t in blockers:
                    t.join()
                if r.status_code == 503:
                    break
        assert r is not None and r.status_code == 503
        assert r.headers["retry-after"] == "1" and "retry later" in r.json()["error"]


def test_bad_model_dir_is_one_line_error(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    done = cauce(["serve", str(tmp_path), "--port", "0"], serve_env(cauce_env), timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}/cauce-model.json: is missing: not a cauce model directory"
    )


def test_options_from_env_and_bad_values(
    models: dict[str, Path], cauce_env: dict[str, str]
) -> None:
    env = {**serve_env(cauce_env), "CAUCE_SERVE_MAX_BATCH_SIZE": "lots"}
    done = cauce(["serve", str(models["flights"])], env, timeout=60)
    assert done.returncode == 2 and "--max-batch-size: invalid int value: 'lots'" in done.stderr
    env = {**serve_env(cauce_env), "CAUCE_SERVE_WORKERS": "0"}
    done = cauce(["serve", str(models["flights"])], env, timeout=60)
    assert done.returncode == 2 and "error: workers must be >= 1, got 0" in done.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_in_use(models: dict[str, Path], cauce_env: dict[str, str], busy_port: int) -> None:
    env = {**serve_env(cauce_env), "CAUCE_SERVE_PORT": str(busy_port)}
    done = cauce(["serve", str(models["flights"])], env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"error: cannot listen on 127.0.0.1:{busy_port}" in done.stderr


def test_env_configures_the_server(models: dict[str, Path], cauce_env: dict[str, str]) -> None:
    env = {**cauce_env, "CAUCE_SERVE_MAX_BATCH_SIZE": "4", "CAUCE_SERVE_MAX_DELAY_MS": "0"}
    with ServerProcess(models["flights"], env=env) as server:
        assert "batches of up to 4, max delay 0 ms" in server.lines[0]
        text = httpx.get(f"{server.url}/metrics").text
        assert 'cauce_serve_batch_size_bucket{le="4.0",model="flights-synthetic"}' in text


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_a_model_that_cannot_load_stops_the_server(
    models: dict[str, Path], cauce_env: dict[str, str], workers: str, tmp_path: Path
) -> None:
    """An archive that is not TorchScript (its sha256 in cauce-model.json matches, so only
    loading finds out): loading fails in the worker(s); the server stops with an error instead
    of serving a model it does not have or restarting workers forever."""
    broken = tmp_path / "broken"
    shutil.copytree(models["flights"], broken)
    spec = json.loads((broken / "cauce-model.json").read_text())
    (broken / spec["model_file"]).write_bytes(b"not a TorchScript archive")
    spec["sha256"] = hashlib.sha256(b"not a TorchScript archive").hexdigest()
    (broken / "cauce-model.json").write_text(json.dumps(spec))
    argv = ["serve", str(broken), "--port", "0", "--workers", workers]
    done = cauce(argv, serve_env(cauce_env), timeout=120)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot serve {broken}: "), done.stderr
    assert "not a loadable TorchScript archive" in done.stderr
    # said once by each worker that failed, or (one worker) by the server's own last line
    failed = done.stderr.count("Application startup failed") if workers == "2" else 1
    assert failed >= 1
    assert done.stderr.count("not a loadable TorchScript archive") == failed, done.stderr
