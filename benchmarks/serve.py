"""Model serving: `cauce serve` with and without batching against FastAPI, LitServe and KServe.

Every server serves the same TorchScript model (loaded with ``cauce.serve.load_model``) on
127.0.0.1 and answers the same Open Inference Protocol JSON request, one sample per request:

- **cauce**: ``cauce serve MODEL --max-batch-size 64 --max-delay-ms 2`` (adaptive batching);
- **cauce-nobatch**: ``cauce serve MODEL --max-batch-size 1`` (the same server, a run per request);
- **fastapi**: a FastAPI app whose ``def`` endpoint parses the body and runs the model, per request;
- **fastapi-batch**: a FastAPI app whose ``async`` endpoint hands the parsed inputs to cauce's own
  batcher (``cauce.serve._batcher.Batcher``, the same settings as cauce's): against **fastapi**
  it shows what batching gains under the same HTTP layer, against **cauce** what cauce's own
  HTTP layer (plain ASGI, orjson) gains over FastAPI's with the same batching;
- **litserve**: LitServe with ``LitAPI(max_batch_size=64, batch_timeout=0.002)``;
- **kserve**: KServe's own Python model server (``kserve.ModelServer``, one worker) with a
  ``kserve.Model`` whose ``predict`` takes the v2 ``InferRequest`` and returns an
  ``InferResponse``; KServe's Python server does not batch (its batcher is a sidecar on
  Kubernetes). It runs from its own environment (``--kserve-python``, default
  ``CAUCE_BENCH_KSERVE``; ``scripts/bench.sh serve`` builds it), skipped with the reason when
  that does not import ``kserve``.

Two models: ``flights`` (embeddings + small MLP, tens of microseconds a run) and ``heavy`` (the
same inputs into a wide MLP, milliseconds a sample: where batching pays). The load generator is
an aiohttp client in this process: ``--concurrency`` workers (1 and 64), each sending its next
request when its last one is answered, for ``--duration`` seconds after ``--warmup``; a
figure counts the answers that arrive within that window. Rounds
alternate between the servers (all four are up, idle but one); each figure is the median of
the rounds. The last line printed is one JSON object with every figure; ``ratio`` is the
throughput of cauce with batching over cauce without, on the heavy model at concurrency 64,
``ratio_litserve`` and ``ratio_kserve`` that of cauce over LitServe and over KServe in the same
setting, ``ratio_http`` that of cauce over fastapi-batch (the HTTP layer, batching alike) and
``ratio_batching_fastapi`` that of fastapi-batch over fastapi (batching, HTTP layer alike).

    .venv/bin/python benchmarks/serve.py            # about 10 minutes
    .venv/bin/python benchmarks/serve.py --quick    # a smoke run, about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import Machine, can_import, quick_default

MAX_BATCH = 64
MAX_DELAY_MS = 2.0
SERVERS = ("cauce", "cauce-nobatch", "fastapi", "fastapi-batch", "litserve", "kserve")
PEERS = ("fastapi", "fastapi-batch", "litserve", "kserve")
#: The checkout's sources: a peer in another environment imports cauce (the model loader) here.
SRC = Path(__file__).resolve().parent.parent / "src"


# -- peer servers (run as `python benchmarks/serve.py --peer NAME --model DIR --port P`) ---------


def _arrays(body: dict[str, Any], model: Any) -> dict[str, np.ndarray]:
    types = {t.name: t.datatype for t in model.inputs}
    dtypes = {"INT64": np.int64, "FP32": np.float32}
    return {
        item["name"]: np.asarray(item["data"], dtype=dtypes[types[item["name"]]]).reshape(
            item["shape"]
        )
        for item in body["inputs"]
    }


def _response(model: Any, values: np.ndarray) -> dict[str, Any]:
    return {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": [
            {
                "name": "probability",
                "datatype": "FP32",
                "shape": list(values.shape),
                "data": values.tolist(),
            }
        ],
    }


def run_fastapi(model_dir: str, port: int) -> None:
    import uvicorn
    from fastapi import Body, FastAPI

    from cauce.serve import load_model

    model = load_model(model_dir)
    model.warmup(MAX_BATCH)
    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/v2/models/{name}/infer")
    def infer(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return _response(model, model.predict(_arrays(body, model))["probability"])

    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


def run_fastapi_batch(model_dir: str, port: int) -> None:
    """FastAPI in front of cauce's batcher: the request is read and checked on the event loop,
    then queued; the batcher runs the model on its own thread for all that are waiting."""
    import contextlib
    from collections.abc import AsyncIterator

    import uvicorn
    from fastapi import FastAPI, Request

    from cauce.serve import load_model
    from cauce.serve._batcher import Batcher

    model = load_model(model_dir)
    model.warmup(MAX_BATCH)
    batcher: list[Batcher] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.append(
            Batcher(
                model.run, max_batch_size=MAX_BATCH, max_delay=MAX_DELAY_MS / 1000, max_queue=4096
            )
        )
        batcher[0].start()
        yield
        await batcher[0].stop()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    def health() -> str:
        return "ok"

    async def infer(name: str, request: Request) -> dict[str, Any]:
        queue = batcher[0]
        queue.expect()
        try:
            arrays = _arrays(json.loads(await request.body()), model)
            rows = model.check(arrays)
        except BaseException:
            queue.forget()
            raise
        return _response(model, (await queue.submit(arrays, rows))["probability"])

    # The annotations are strings here (``from __future__ import annotations``) and Request is
    # not a module global: FastAPI needs the class itself to pass the request in.
    infer.__annotations__["request"] = Request
    app.post("/v2/models/{name}/infer")(infer)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


def run_kserve(model_dir: str, port: int) -> None:
    """KServe's ModelServer with a v2 model around the same TorchScript model."""
    import logging

    import kserve
    import kserve.logging
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from cauce.serve import load_model

    class CauceModel(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.model = load_model(model_dir)
            self.model.warmup(MAX_BATCH)
            self.ready = True

        def predict(
            self, payload: InferRequest, headers: dict[str, str] | None = None
        ) -> InferResponse:
            arrays = {item.name: item.as_numpy() for item in payload.inputs}
            out = self.model.predict(arrays)["probability"]
            output = InferOutput(name="probability", shape=list(out.shape), datatype="FP32")
            output.set_data_from_numpy(out, binary_data=False)
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=[output]
            )

    model = CauceModel(Path(model_dir).name)
    # No log line per request (access, trace, latency): no other server here writes one.
    kserve.logging.configure_logging()
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server = kserve.ModelServer(
        http_port=port,
        grpc_port=_free_port(),
        enable_grpc=False,
        workers=1,
        enable_latency_logging=False,
    )
    server.start([model])


try:  # at module level: LitServe starts its workers with `spawn`, which pickles the API class
    import litserve as ls

    class LitModelAPI(ls.LitAPI):  # type: ignore[misc]
        """The model behind LitServe, with its own batching (concatenate rows, split them)."""

        def __init__(self, model_dir: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.model_dir = model_dir

        def setup(self, device: str) -> None:
            from cauce.serve import load_model

            self.model = load_model(self.model_dir)
            self.model.warmup(MAX_BATCH)

        # No annotation on `request`: LitServe reads the annotation as the body's type.
        def decode_request(self, request, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
            return _arrays(request, self.model)

        def batch(self, inputs: list[Any]) -> Any:
            return {k: np.concatenate([x[k] for x in inputs]) for k in inputs[0]}

        def predict(self, x: Any, **kwargs: Any) -> Any:
            return self.model.run(x)["probability"]

        def unbatch(self, output: Any) -> list[Any]:
            return [output[i : i + 1] for i in range(len(output))]

        def encode_response(self, output: Any, **kwargs: Any) -> Any:
            return _response(self.model, output)

except ImportError:  # pragma: no cover - the benchmark then skips LitServe
    ls = None


def run_litserve(model_dir: str, port: int) -> None:
    if ls is None:
        raise SystemExit("error: pip install litserve to benchmark it")
    api = LitModelAPI(
        model_dir,
        max_batch_size=MAX_BATCH,
        batch_timeout=MAX_DELAY_MS / 1000,
        api_path="/v2/models/x/infer",
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")


# -- the harness -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server process; ``url`` is where it answers, ``infer`` its inference path."""

    def __init__(
        self, kind: str, model_dir: Path, model_name: str, threads: int, python: str
    ) -> None:
        self.kind = kind
        # Every server gets the torch threads that `cauce serve` picks by default here (the
        # CPUs less one, left to the HTTP event loop): the serving layers are compared.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
        env = {k: v for k, v in env.items() if not k.startswith("CAUCE_SERVE_")}
        if python != sys.executable:  # another environment: cauce from this checkout
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        self.lines: list[str] = []
        if kind.startswith("cauce"):
            batch = "1" if kind == "cauce-nobatch" else str(MAX_BATCH)
            argv = [
                sys.executable,
                "-m",
                "cauce",
                "serve",
                str(model_dir),
                "--port",
                "0",
                "--max-batch-size",
                batch,
                "--max-delay-ms",
                str(MAX_DELAY_MS),
            ]
            self.infer = f"/v2/models/{model_name}/infer"
            self.health = "/v2/health/ready"
        else:
            port = _free_port()
            argv = [
                python,
                __file__,
                "--peer",
                kind,
                "--model",
                str(model_dir),
                "--port",
                str(port),
            ]
            self.url = f"http://127.0.0.1:{port}"
            if kind == "litserve":
                self.infer, self.health = "/v2/models/x/infer", "/health"
            elif kind == "kserve":  # the model is named after its folder
                self.infer = f"/v2/models/{model_dir.name}/infer"
                self.health = f"/v2/models/{model_dir.name}/ready"
            else:
                self.infer, self.health = f"/v2/models/{model_name}/infer", "/health"
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            match = re.search(r"on (http://[^ ]+) ", line)
            if match and self.kind.startswith("cauce"):
                self.url = match[1]

    def wait_ready(self, timeout: float = 120) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: {self.kind} exited: " + "\n".join(self.lines[-20:]))
            url = getattr(self, "url", None)
            if url:
                try:
                    with urllib.request.urlopen(url + self.health, timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.2)
        raise SystemExit(f"error: {self.kind} not ready after {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)


def _bodies(model_dir: Path, n: int = 256) -> list[bytes]:
    from cauce.serve import load_model
    from cauce.serve._synthetic import synthetic_records

    model = load_model(model_dir)
    arrays = model.preprocess(synthetic_records(n, seed=7))
    out = []
    for i in range(n):
        inputs = [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": [1, *arrays[t.name].shape[1:]],
                "data": arrays[t.name][i].reshape(-1).tolist(),
            }
            for t in model.inputs
        ]
        out.append(json.dumps({"inputs": inputs}).encode())
    return out


async def _load(
    url: str, bodies: list[bytes], concurrency: int, warmup: float, duration: float
) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    async def worker(session: aiohttp.ClientSession, seed: int) -> None:
        nonlocal errors
        i = seed
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            body = bodies[i % len(bodies)]
            i += 1
            async with session.post(
                url, data=body, headers={"content-type": "application/json"}
            ) as r:
                await r.read()
                ok = r.status == 200
            t1 = time.perf_counter()
            # Every answer that arrives within the window counts, whenever its request left: a
            # server whose latency nears the window (one model run per request, 64 waiting) is
            # not under-counted by keeping only requests that both left and came back in it.
            if measure_from <= t1 <= stop_at:
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, k * 7) for k in range(concurrency)))
    lat = np.array(latencies) * 1000
    return {
        "throughput": len(latencies) / duration,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors": errors,
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def bench_model(kind: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from cauce.serve._synthetic import save_synthetic

    model_dir = save_synthetic(folder / kind, kind)
    name = f"{kind}-synthetic"
    bodies = _bodies(model_dir)
    servers = [
        Server(s, model_dir, name, args.threads, args.pythons.get(s, sys.executable))
        for s in args.servers
    ]
    try:
        for s in servers:
            s.wait_ready()
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            for conc in args.concurrency:
                order = servers if round_ % 2 == 0 else servers[::-1]
                for s in order:
                    figures = asyncio.run(
                        _load(s.url + s.infer, bodies, conc, args.warmup, args.duration)
                    )
                    runs.setdefault((s.kind, conc), []).append(figures)
                    print(
                        f"{kind:8} {s.kind:14} c={conc:<3} round {round_ + 1}: "
                        f"{figures['throughput']:8.1f} req/s  p50 {figures['p50_ms']:7.2f} ms  "
                        f"p99 {figures['p99_ms']:7.2f} ms  errors {figures['errors']}",
                        flush=True,
                    )
    finally:
        for s in servers:
            s.stop()
    return {f"{srv}@c{conc}": _median(r) for (srv, conc), r in runs.items()}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="a smoke run: short and 1 round (default from CAUCE_BENCH_QUICK)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not measured per run")
    parser.add_argument("--models", default="flights,heavy")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument(
        "--kserve-python",
        default=os.environ.get("CAUCE_BENCH_KSERVE") or sys.executable,
        help="a Python with kserve (default CAUCE_BENCH_KSERVE, else this one)",
    )
    parser.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        peers = {
            "fastapi": run_fastapi,
            "fastapi-batch": run_fastapi_batch,
            "litserve": run_litserve,
            "kserve": run_kserve,
        }
        peers[args.peer](args.model, args.port)
        return 0
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    from cauce.serve._loading import default_threads

    machine = Machine()
    args.threads = default_threads(1)
    args.servers = [s for s in args.servers.split(",") if s]
    args.pythons = {"kserve": args.kserve_python}
    skipped: dict[str, str] = {}
    for kind, module in (("litserve", "litserve"), ("kserve", "kserve")):
        python = args.pythons.get(kind, sys.executable)
        if kind in args.servers and (reason := can_import(python, module)):
            skipped[kind] = f"{module} does not import in {python}: {reason}"
            print(f"skipped  {kind}: {skipped[kind]}", flush=True)
            args.servers.remove(kind)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cauce-bench-serve-") as tmp:
        for kind in args.models.split(","):
            results[kind] = bench_model(kind, Path(tmp), args)
    summary: dict[str, Any] = {
        "benchmark": "serve",
        "rounds": args.rounds,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "skipped": skipped,
    }
    heavy = results.get("heavy", {})
    top = max(args.concurrency)
    at = {s: heavy.get(f"{s}@c{top}") for s in SERVERS}
    b, nb = at["cauce"], at["cauce-nobatch"]
    if b and nb:
        summary["ratio"] = _ratio(b["throughput"], nb["throughput"])
        summary["p99_ratio"] = _ratio(b["p99_ms"], nb["p99_ms"])
    for key, top_side, bottom_side in (
        ("ratio_litserve", "cauce", "litserve"),
        ("ratio_kserve", "cauce", "kserve"),
        ("ratio_http", "cauce", "fastapi-batch"),
        ("ratio_batching_fastapi", "fastapi-batch", "fastapi"),
    ):
        mine, peer = at[top_side], at[bottom_side]
        summary[key] = _ratio(mine["throughput"], peer["throughput"]) if mine and peer else None
    for kind, figures in results.items():
        c1, c1nb = figures.get("cauce@c1"), figures.get("cauce-nobatch@c1")
        if c1 and c1nb:
            summary[f"added_p50_ms_c1_{kind}"] = round(c1["p50_ms"] - c1nb["p50_ms"], 3)
        for conc in args.concurrency:
            mine = figures.get(f"cauce@c{conc}")
            for peer_name in ("litserve", "kserve"):
                peer = figures.get(f"{peer_name}@c{conc}")
                if mine and peer:
                    summary[f"ratio_{peer_name}_{kind}_c{conc}"] = _ratio(
                        mine["throughput"], peer["throughput"]
                    )
    print()
    for key, value in summary.items():
        if key.startswith(("ratio", "p99_ratio", "added")):
            print(f"{key:32} {value}")
    summary["results"] = results
    summary.update(machine.finish())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
