"""``cauce serve``, ``cauce package`` and ``cauce predict``: thin commands over cauce.serve.

Nothing heavy is imported here: each handler imports what it needs when it runs, so that
``cauce --help`` never imports torch or uvicorn. Every option has an environment variable
(``CAUCE_SERVE_*`` named after the setting, ``CAUCE_PACKAGE_*``, ``CAUCE_PREDICT_*``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cauce.cli._options import env_option

#: (option, destination, type, default, help); bool: a flag. ``cauce serve``'s variables are
#: ``CAUCE_SERVE_`` + the destination in capitals, the names ServeSettings.from_env reads.
_Table = Sequence[tuple[str, str, Callable[[str], Any], str | None, str]]

_SERVE: _Table = (
    (
        "--host",
        "host",
        str,
        "127.0.0.1",
        "address to listen on; one reachable from other "
        "machines (0.0.0.0 in a container) needs a token or --insecure",
    ),
    ("--port", "port", int, "8080", "0 picks a free port (see --ready-file)"),
    ("--workers", "workers", int, "1", "processes, each with its own copy of the model"),
    ("--device", "device", str, "cpu", "cpu, cuda or cuda:N"),
    ("--max-batch-size", "max_batch_size", int, "64", "rows per model run; 1 turns batching off"),
    (
        "--max-delay-ms",
        "max_delay_ms",
        float,
        "2.0",
        "longest wait for requests known to be on their way, only when some are",
    ),
    ("--max-queue", "max_queue", int, "1024", "queued requests before 503 + Retry-After"),
    ("--max-body-bytes", "max_body_bytes", int, "16777216", "larger request bodies get 413"),
    ("--threads", "threads", int, "0", "torch threads per worker; 0: CPUs / workers less one"),
    ("--grace", "grace_s", float, "30.0", "seconds to drain in-flight requests on SIGTERM"),
    ("--access-log", "access_log", bool, None, "log every request"),
    (
        "--token",
        "token",
        str,
        None,
        "requests (but health and readiness) must send "
        "Authorization: Bearer TOKEN; prefer the variable or --token-file (a command line is "
        "visible to every user of the machine)",
    ),
    ("--token-file", "token_file", str, None, "a file holding the token"),
    ("--insecure", "insecure", bool, None, "serve on a non-loopback address without a token"),
    ("--tls-cert", "tls_cert", str, None, "PEM certificate (chain): serve HTTPS"),
    ("--tls-key", "tls_key", str, None, "PEM private key of --tls-cert"),
    (
        "--ready-file",
        "ready_file",
        str,
        None,
        'written once the server answers: {"url", '
        '"host", "port", "pid"} as JSON (atomically); removed when it stops',
    ),
    ("--max-header-bytes", "max_header_bytes", int, "32768", "a larger request head gets 431"),
    (
        "--header-timeout",
        "header_timeout_s",
        float,
        "10.0",
        "seconds a client has to send a request's head; slower ones are disconnected",
    ),
)

_PACKAGE: _Table = (
    ("--out", "out", str, None, "directory to write"),
    ("--image", "image", str, None, "image name:tag (default cauce-NAME:VERSION)"),
    ("--device", "device", str, "cpu", "cpu, or cuda to add nvidia.com/gpu limits"),
    ("--gpus", "gpus", int, "1", "GPUs per pod with --device cuda"),
    ("--replicas", "replicas", int, "1", "minimum replicas"),
    ("--max-replicas", "max_replicas", int, "4", "HPA maximum"),
    ("--cpu", "cpu", str, "1", "CPU request"),
    (
        "--memory",
        "memory",
        str,
        None,
        "memory request and limit, e.g. 2Gi (default: from the model size)",
    ),
    ("--port", "port", int, "8080", "container port"),
    ("--namespace", "namespace", str, None, "Kubernetes namespace"),
    (
        "--cauce-requirement",
        "cauce_requirement",
        str,
        None,
        "what the image pip-installs for cauce",
    ),
    (
        "--token-secret",
        "token_secret",
        str,
        None,
        "the Kubernetes Secret whose key 'token' "
        "holds the server's token (default cauce-NAME-token)",
    ),
    ("--insecure", "insecure", bool, None, "no token: the server answers anyone who reaches it"),
    (
        "--kserve",
        "kserve",
        bool,
        None,
        "write a KServe InferenceService (OUT/k8s/inferenceservice.yaml) in place of the "
        "Deployment, Service and HorizontalPodAutoscaler",
    ),
)

_PREDICT: _Table = (
    (
        "--input",
        "input",
        str,
        None,
        "Parquet file or folder, a prepared dataset with --split, or with --stream a folder "
        "that files arrive in; paths or URIs (s3://, hdfs://, file://)",
    ),
    ("--output", "output", str, None, "folder to write (path or URI)"),
    ("--split", "split", str, None, "the split of the prepared dataset --input to score"),
    ("--overwrite", "overwrite", bool, None, "replace an existing --output (else refused)"),
    ("--stream", "stream", bool, None, "score files as they arrive (Spark Structured Streaming)"),
    (
        "--checkpoint",
        "checkpoint",
        str,
        None,
        "with --stream: the stream's checkpoint folder; a restart with it goes on where it was",
    ),
    ("--input-format", "input_format", str, "parquet", "with --stream: the arriving files' format"),
    (
        "--trigger",
        "trigger",
        float,
        "1.0",
        "with --stream: seconds between micro-batches",
    ),
    ("--engine", "engine", str, "duckdb", "duckdb or spark (default duckdb)"),
    ("--batch-size", "batch_size", int, "8192", "rows per model run"),
)

_REQUIRED = {"--out", "--input", "--output"}


def _add(
    parser: argparse.ArgumentParser,
    prefix: str,
    table: _Table,
    choices: dict[str, tuple[str, ...]] | None = None,
) -> None:
    env_option(
        parser,
        "model_dir",
        env=prefix + "MODEL_DIR",
        metavar="MODEL_DIR",
        help="a directory written by cauce.serve.save_model, or its URI (s3://...)",
    )
    for flag, dest, kind, default, text in table:
        extra: dict[str, Any] = {"dest": dest}
        if kind is bool:
            extra["flag"] = True
        else:
            metavar = flag.removeprefix("--").upper().replace("-", "_")
            extra.update(type=kind, default=default, required=flag in _REQUIRED, metavar=metavar)
            if choices and flag in choices:
                extra["choices"] = choices[flag]
        env_option(parser, flag, env=prefix + dest.upper(), help=text, **extra)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve``, ``package`` and ``predict`` subcommands."""
    serve = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (Open Inference Protocol v2, dynamic batching)",
        description=(
            "Serve MODEL_DIR over HTTP: Open Inference Protocol v2 (KServe, Triton clients), "
            "POST /v2/models/NAME/predict for raw feature records, GET /metrics for Prometheus, "
            "GET /v2/openapi.json for the OpenAPI document. Requests that arrive together run "
            "as one batch. SIGTERM drains and exits."
        ),
    )
    _add(serve, "CAUCE_SERVE_", _SERVE)
    serve.set_defaults(func=run_serve)
    package = subparsers.add_parser(
        "package",
        help="write a Dockerfile and Kubernetes manifests that serve a model",
        description=(
            "Write OUT/Dockerfile (the model copied into the image) and OUT/k8s/*.yaml: a "
            "Deployment with readiness and liveness probes on the v2 health endpoints and the "
            "token from a Secret, a Service and a HorizontalPodAutoscaler. Build the image "
            "with `docker build OUT`."
        ),
    )
    _add(package, "CAUCE_PACKAGE_", _PACKAGE, {"--device": ("cpu", "cuda")})
    package.set_defaults(func=run_package)
    predict = subparsers.add_parser(
        "predict",
        help="score a Parquet dataset with a model (DuckDB here, or Spark), or a stream",
        description=(
            "Score every row of the Parquet file or folder --input (or of the split --split of "
            "a prepared dataset) with MODEL_DIR's preprocessing and model; write the input's "
            "columns and the model's outputs as Parquet files in the folder --output, with the "
            "model's id and lineage in their metadata. An existing --output is refused unless "
            "--overwrite. With --stream, score files as they arrive in --input on Spark "
            "Structured Streaming until Ctrl-C or SIGTERM. Exit codes: 0 done, 1 failed, "
            "2 refused (bad option, missing input or model, existing output), 130 interrupted."
        ),
    )
    _add(
        predict,
        "CAUCE_PREDICT_",
        _PREDICT,
        {"--engine": ("duckdb", "spark"), "--input-format": ("parquet", "json", "csv")},
    )
    env_option(
        predict,
        "--spark-master",
        env="CAUCE_SPARK_MASTER",
        help="for --engine spark: local[N], spark://HOST:7077",
    )
    predict.set_defaults(func=run_predict)


def _token(args: argparse.Namespace) -> str:
    from cauce.serve.api import SettingsError, check_token

    for flag, value in (("--token", args.token), ("--token-file", args.token_file)):
        if value == "":  # given on the command line: an empty variable counts as unset
            raise SettingsError(
                f"{flag} is empty: give the token (or the file holding it), or leave {flag} out"
            )
    if args.token and args.token_file:
        raise SettingsError(
            "give the token once: --token (or $CAUCE_SERVE_TOKEN) or --token-file "
            "(or $CAUCE_SERVE_TOKEN_FILE), not both"
        )
    if not args.token_file:
        return str(args.token or "")
    try:
        with open(args.token_file, encoding="utf-8") as f:
            text = f.read(8192).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read --token-file {args.token_file}: {exc}") from None
    return check_token(text, f"the token in {args.token_file}")


def run_serve(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from cauce.serve import ServeSettings, local_model_dir, serve, server_url

    values = {f.name: getattr(args, f.name) for f in fields(ServeSettings) if f.name in args}
    values["token"] = _token(args)
    values["model_dir"] = str(local_model_dir(values["model_dir"]))  # s3://...: a local copy
    for key in ("tls_cert", "tls_key", "ready_file"):
        values[key] = values[key] or ""
    settings = ServeSettings(**values)

    def listening(host: str, port: int) -> None:
        print(
            f"cauce serve: {settings.model_dir} on {server_url(settings.scheme, host, port)} "
            f"({settings.workers} worker(s), {settings.device}, batches of up to "
            f"{settings.max_batch_size}, max delay {settings.max_delay_ms:g} ms"
            f"{', token required' if settings.token else ''})",
            file=sys.stderr,
            flush=True,
        )

    serve(settings, on_listening=listening)
    return 0


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
        token_secret=args.token_secret,
        insecure=args.insecure,
        kserve=args.kserve,
    )
    for path in written:
        print(path)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from cauce.serve import SettingsError, predict_dataset

    if args.stream:
        from cauce.serve import stream_predict

        if not args.checkpoint:
            raise SettingsError("--stream needs --checkpoint DIR, where the stream keeps its state")
        import signal

        ended = stream_predict(
            args.model_dir,
            args.input,
            args.output,
            args.checkpoint,
            fmt=args.input_format,
            spark_master=args.spark_master,
            batch_size=args.batch_size,
            trigger_s=args.trigger,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        return 130 if ended.signal == signal.SIGINT else 0
    for flag, value in (
        ("--checkpoint", args.checkpoint),
        ("--input-format", args.input_format != "parquet"),
        ("--trigger", args.trigger != 1.0),  # (an explicit 1.0 cannot be told from the default)
    ):
        if value:
            raise SettingsError(f"{flag} is for --stream; add --stream or leave {flag} out")
    rows = predict_dataset(
        args.model_dir,
        args.input,
        args.output,
        engine=args.engine,
        spark_master=args.spark_master,
        batch_size=args.batch_size,
        split=args.split,
        overwrite=args.overwrite,
    )
    print(f"scored {rows:,} rows into {args.output}", file=sys.stderr)
    return 0
