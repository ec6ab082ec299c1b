"""``cauce doctor --cluster URL``: check from the driver what a gang on that cluster needs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cauce.cli.main import env_default
from cauce.errors import SpecError
from cauce.spec import CLUSTER_PREFIXES

__all__ = ["register"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "doctor",
        help="check a Spark cluster from this host: master, executors, connections, storage",
        description="Check from the driver what it can of a Spark cluster: the master answers, "
        "executors register (cores, GPUs), an executor connects back to the driver's address, "
        "and (with --storage) every probe task writes an object there that this host reads "
        "back. One line per check, 'ok' or 'FAIL: reason (fix)'; exit 0 when all pass, 1 "
        "otherwise, 2 for bad options.",
    )
    parser.add_argument(
        "--cluster",
        default=env_default("CAUCE_CLUSTER"),
        help="the Spark master: spark://HOST:PORT, yarn, k8s://https://HOST:PORT, local[N] "
        "[env CAUCE_CLUSTER]",
    )
    parser.add_argument(
        "--storage",
        metavar="URI",
        default=env_default("CAUCE_DOCTOR_STORAGE"),
        help="a shared storage folder to test from the executors: s3://bucket/path, "
        "file:///shared/path, hdfs://... [env CAUCE_DOCTOR_STORAGE]",
    )
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting, as for `cauce run` (repeatable); also $CAUCE_SPARK_CONF",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for executors and for the probe tasks (default 60)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cauce.cluster.spark import doctor
    from cauce.spec import spark_conf_pairs

    if not args.cluster or args.cluster == "local" or not args.cluster.startswith(CLUSTER_PREFIXES):
        raise SpecError(
            "--cluster",
            f"must be a Spark master (spark://HOST:PORT, yarn, k8s://..., local[N]), got "
            f"{args.cluster!r}; the local cluster needs no check",
        )
    if args.wait <= 0:
        raise SpecError("--wait", f"must be > 0 seconds, got {args.wait:g}")
    conf = spark_conf_pairs(args.conf, env_default("CAUCE_SPARK_CONF"))
    failed = 0
    for check in doctor(args.cluster, conf, storage=args.storage, wait=args.wait):
        print(check.line(), flush=True)
        failed += not check.ok
    if failed:
        sys.stderr.write(f"error: {failed} check(s) failed\n")
    return 1 if failed else 0
