"""A multi-host Spark cluster on this machine, for trying things by hand (needs root).

    .venv/bin/python scripts/multihost_cluster.py up [--workers N]  # make it, say how to use it
    .venv/bin/python scripts/multihost_cluster.py down    # stop and remove everything
    .venv/bin/python scripts/multihost_cluster.py status  # what of it exists now

Each host is a Linux network namespace with its own address on 10.213.0.0/24: the Spark master,
N workers, the driver (where you run cauce) and an S3 store (moto's server). The same cluster
as the tests' ``multihost_cluster`` fixture (tests/multihost.py); its files live in
/tmp/cauce-multihost until ``down``. ``up`` first removes what an earlier run left.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import multihost  # noqa: E402 - after the path to tests/
import multihost_net  # noqa: E402

FOLDER = Path("/tmp/cauce-multihost")


def up(workers: int) -> int:
    FOLDER.mkdir(parents=True, exist_ok=True)
    cluster = multihost.MultiHost(workers, folder=FOLDER)
    try:
        cluster.up(watchdog=False)
    except multihost.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = cluster.env(cluster.driver)
    exports = " ".join(
        f"{k}={shlex.quote(env[k])}"
        for k in ("HOME", "TMPDIR", "CAUCE_HOME", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                  "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    )  # fmt: skip
    print(f"master:  {cluster.master}  (web UI {cluster.master_ui}, from a host)")
    print(f"s3:      {cluster.s3}  (moto; key and secret 'testing')")
    for name, address in cluster.hosts.items():
        print(f"host:    {name:10} {address}")
    print("run cauce on the driver host:")
    print(
        f"  ip netns exec {cluster.driver} env {exports} \\\n"
        f"    {sys.executable} -m cauce run job.yaml --cluster {cluster.master}"
    )
    print(f"a shell there:  ip netns exec {cluster.driver} bash")
    print(f"cut a host off: ip link set {cluster.names.link('w1')} down   (up again: ... up)")
    print(f"logs:           {FOLDER}/hosts/*/logs")
    print(f"stop it all:    {sys.executable} {Path(__file__).resolve()} down")
    return 0


def down() -> int:
    cluster = multihost.MultiHost(0, folder=FOLDER)
    cluster.down()
    left = multihost_net.leftovers(cluster.names)
    print("removed" if not left else f"left: {', '.join(left)}")
    return 0 if not left else 1


def status() -> int:
    names = multihost_net.Names()
    left = multihost_net.leftovers(names)
    for item in left:
        ns = item.split()[-1]
        pids = multihost_net.pids_in(ns) if item.startswith("namespace") else []
        print(item + (f" (processes {', '.join(map(str, pids))})" if pids else ""))
    if not left:
        print("no multi-host cluster")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    started = commands.add_parser("up", help="make the cluster and print how to use it")
    started.add_argument("--workers", type=int, default=2, help="worker hosts (default 2)")
    commands.add_parser("down", help="stop every process and remove the network")
    commands.add_parser("status", help="what of the cluster exists now")
    args = parser.parse_args(argv)
    if args.command == "up":
        if args.workers < 1:
            parser.error(f"--workers must be >= 1, got {args.workers}")
        return up(args.workers)
    return down() if args.command == "down" else status()


if __name__ == "__main__":
    sys.exit(main())
