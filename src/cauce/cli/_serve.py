"""``cauce serve``, ``cauce package`` and ``cauce predict``: thin commands over cauce.serve.

Nothing heavy is imported here: each handler imports what it needs when it runs, so that
``cauce --help`` never imports torch or uvicorn.
"""

from __future__ import annotations

import argparse
import os
import sys

_S = "CAUCE_SERVE_"
_P = "CAUCE_PACKAGE_"
_PR = "CAUCE_PREDICT_"


def _env(name: str, default: str | None = None) -> str | None:
    """``$name`` if set and not empty, else ``default``; a string default is parsed by argparse
    with the option's ``type``, so a bad value is reported like a bad option."""
    return os.environ.get(name) or default


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve``, ``package`` and ``predict`` subcommands."""
    _register_serve(subparsers)
    _register_package(subparsers)
    _register_predict(subparsers)


def _model_dir(parser: argparse.ArgumentParser, env: str) -> None:
    default = _env(env)
    parser.add_argument(
        "model_dir",
        metavar="MODEL_DIR",
        nargs="?" if default else None,
        default=default,
        help=f"a directory written by cauce.serve.save_model (env {env})",
    )


def _register_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (Open Inference Protocol v2, dynamic batching)",
        description=(
            "Serve MODEL_DIR over HTTP: Open Inference Protocol v2 (KServe, Triton clients), "
            "POST /v2/models/NAME/predict for raw feature records, GET /metrics for Prometheus. "
            "Requests that arrive together run as one batch. SIGTERM drains and exits."
        ),
    )
    _model_dir(p, _S + "MODEL_DIR")
    p.add_argument("--host", default=_env(_S + "HOST", "127.0.0.1"), help=f"(env {_S}HOST)")
    p.add_argument(
        "--port",
        type=int,
        default=_env(_S + "PORT", "8080"),
        help=f"0 picks a free port (default 8080; env {_S}PORT)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=_env(_S + "WORKERS", "1"),
        help=f"processes, each with its own copy of the model (env {_S}WORKERS)",
    )
    p.add_argument(
        "--device", default=_env(_S + "DEVICE", "cpu"), help=f"cpu, cuda or cuda:N (env {_S}DEVICE)"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=_env(_S + "MAX_BATCH_SIZE", "64"),
        help=f"rows per model run; 1 turns batching off (default 64; env {_S}MAX_BATCH_SIZE)",
    )
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=_env(_S + "MAX_DELAY_MS", "2.0"),
        help=(
            "longest wait for requests known to be on their way, only when some are "
            f"(default 2; env {_S}MAX_DELAY_MS)"
        ),
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=_env(_S + "MAX_QUEUE", "1024"),
        help=f"queued requests before 503 + Retry-After (default 1024; env {_S}MAX_QUEUE)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=_env(_S + "MAX_BODY_BYTES", "16777216"),
        help=f"larger request bodies get 413 (default 16 MiB; env {_S}MAX_BODY_BYTES)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=_env(_S + "THREADS", "0"),
        help=f"torch threads per worker; 0: CPUs / workers less one (env {_S}THREADS)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=_env(_S + "GRACE_S", "30.0"),
        help=f"seconds to drain in-flight requests on SIGTERM (default 30; env {_S}GRACE_S)",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        default=_env(_S + "ACCESS_LOG", "0") not in ("", "0"),
        help=f"log every request (env {_S}ACCESS_LOG=1)",
    )
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from cauce.serve import ServeSettings, serve

    settings = ServeSettings(
        model_dir=args.model_dir,
        host=args.host,
        port=args.port,
        workers=args.workers,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        threads=args.threads,
        grace_s=args.grace,
        access_log=args.access_log,
    )

    def listening(host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(
            f"cauce serve: {settings.model_dir} on http://{shown}:{port} "
            f"({settings.workers} worker(s), {settings.device}, batches of up to "
            f"{settings.max_batch_size}, max delay {settings.max_delay_ms:g} ms)",
            file=sys.stderr,
            flush=True,
        )

    serve(settings, on_listening=listening)
    return 0


def _register_package(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "package",
        help="write a Dockerfile and Kubernetes manifests that serve a model",
        description=(
            "Write OUT/Dockerfile (the model copied into the image) and OUT/k8s/*.yaml: a "
            "Deployment with readiness and liveness probes on the v2 health endpoints, a "
            "Service and a HorizontalPodAutoscaler. Build the image with `docker build OUT`."
        ),
    )
    _model_dir(p, _P + "MODEL_DIR")
    p.add_argument(
        "--out",
        default=_env(_P + "OUT"),
        required=_env(_P + "OUT") is None,
        help=f"directory to write (env {_P}OUT)",
    )
    p.add_argument(
        "--image",
        default=_env(_P + "IMAGE"),
        help=f"image name:tag (default cauce-NAME:VERSION; env {_P}IMAGE)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=_env(_P + "DEVICE", "cpu"),
        help=f"cuda adds nvidia.com/gpu limits (env {_P}DEVICE)",
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=_env(_P + "GPUS", "1"),
        help=f"GPUs per pod with --device cuda (env {_P}GPUS)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=_env(_P + "REPLICAS", "1"),
        help=f"minimum replicas (env {_P}REPLICAS)",
    )
    p.add_argument(
        "--max-replicas",
        type=int,
        default=_env(_P + "MAX_REPLICAS", "4"),
        help=f"HPA maximum (env {_P}MAX_REPLICAS)",
    )
    p.add_argument("--cpu", default=_env(_P + "CPU", "1"), help=f"CPU request (env {_P}CPU)")
    p.add_argument(
        "--memory",
        default=_env(_P + "MEMORY"),
        help=f"memory request and limit, e.g. 2Gi (default: from the model size; env {_P}MEMORY)",
    )
    p.add_argument(
        "--port", type=int, default=_env(_P + "PORT", "8080"), help=f"container port (env {_P}PORT)"
    )
    p.add_argument("--namespace", default=_env(_P + "NAMESPACE"), help=f"(env {_P}NAMESPACE)")
    p.add_argument(
        "--cauce-requirement",
        default=_env(_P + "CAUCE_REQUIREMENT"),
        help=f"what the image pip-installs for cauce (env {_P}CAUCE_REQUIREMENT)",
    )
    p.set_defaults(func=run_package)


def run_package(args: argparse.Namespace) -> int:
    from cauce.serve import package

    written = package(
        args.model_dir,
        args.out,
        image=args.image,
        device=args.device,
        gpus=args.gpus,
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        cpu=args.cpu,
        memory=args.memory,
        port=args.port,
        namespace=args.namespace,
        cauce_requirement=args.cauce_requirement,
    )
    for path in written:
        print(path)
    return 0


def _register_predict(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "predict",
        help="score a Parquet dataset with a model (DuckDB here, or Spark)",
        description=(
            "Score every row of the Parquet file or directory --input with MODEL_DIR's "
            "preprocessing and model; write the input's columns and the model's outputs as "
            "Parquet files in the directory --output."
        ),
    )
    _model_dir(p, _PR + "MODEL_DIR")
    p.add_argument(
        "--input",
        default=_env(_PR + "INPUT"),
        required=_env(_PR + "INPUT") is None,
        help=f"Parquet file or directory (env {_PR}INPUT)",
    )
    p.add_argument(
        "--output",
        default=_env(_PR + "OUTPUT"),
        required=_env(_PR + "OUTPUT") is None,
        help=f"directory to write (env {_PR}OUTPUT)",
    )
    p.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default=_env(_PR + "ENGINE", "duckdb"),
        help=f"(default duckdb; env {_PR}ENGINE)",
    )
    p.add_argument(
        "--spark-master",
        default=_env("CAUCE_SPARK_MASTER"),
        help="for --engine spark: local[N], spark://HOST:7077 (env CAUCE_SPARK_MASTER)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=_env(_PR + "BATCH_SIZE", "8192"),
        help=f"rows per model run (env {_PR}BATCH_SIZE)",
    )
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from cauce.serve import predict_dataset

    rows = predict_dataset(
        args.model_dir,
        args.input,
        args.output,
        engine=args.engine,
        spark_master=args.spark_master,
        batch_size=args.batch_size,
    )
    print(f"scored {rows:,} rows into {args.output}", file=sys.stderr)
    return 0
