"""``cauce tensorboard JOB``: TensorBoard on the folder of a job run with a ``tensorboard:``
section, in the foreground (Ctrl-C stops it).

The command prints the URL, then becomes TensorBoard (``exec``): signals and the exit code are
TensorBoard's own, and no process of cauce stays behind it. TensorBoard has no authentication:
an address other than loopback is refused unless ``--insecure`` says to show the job's logs to
the network anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
from typing import Any

from cauce.cli._options import env_option, port_number
from cauce.errors import CauceError, HistoryError, SpecError

__all__ = ["register"]


def register(sub: Any) -> None:
    board = sub.add_parser(
        "tensorboard",
        help="TensorBoard on a job's folder (a job run with a tensorboard: section)",
        description=(
            "Start TensorBoard on the folder of JOB (a job id, or a unique prefix of one): "
            "CAUCE_TENSORBOARD_DIR of its tasks. Prints the URL, then runs until Ctrl-C."
        ),
    )
    env_option(board, "job_id", env="CAUCE_TENSORBOARD_JOB", metavar="JOB", help="the job")
    env_option(
        board,
        "--history",
        env="CAUCE_HISTORY",
        help="SQLAlchemy URL of the history store (default: SQLite in $CAUCE_HOME)",
    )
    env_option(board, "--host", env="CAUCE_TENSORBOARD_HOST", default="127.0.0.1", help="address")
    env_option(
        board,
        "--port",
        env="CAUCE_TENSORBOARD_PORT",
        default="6006",
        type=port_number,
        help="port; 0 picks a free one",
    )
    env_option(
        board,
        "--insecure",
        env="CAUCE_TENSORBOARD_INSECURE",
        flag=True,
        help="listen on an address other than loopback: TensorBoard has no authentication",
    )
    board.set_defaults(func=cmd_tensorboard)


def job_folder(history: str | None, job_id: str) -> tuple[str, str]:
    """The job's full id and TensorBoard folder; an error if it had no ``tensorboard:``."""
    from cauce.gang import tensorboard_dir
    from cauce.history import open_store
    from cauce.spec import TensorBoardSpec

    store = open_store(history)
    try:
        job = store.get_job(job_id)
    finally:
        store.close()
    section = json.loads(job.spec or "{}").get("tensorboard")
    if section is None:
        raise HistoryError(
            f"job {job.id} has no tensorboard: section; run it with tensorboard: "
            "{logdir: DIR} in its job file"
        )
    return job.id, tensorboard_dir(TensorBoardSpec(**section), job.id, job.run_dir)


def check_listen(host: str, port: int, insecure: bool) -> None:
    """Refuse, before TensorBoard starts, an address beyond this host without ``--insecure``
    and an address or port that cannot be listened on (one line each)."""
    from cauce.ui import bind_error, is_loopback

    if not (insecure or is_loopback(host)):
        tunnel = port or 6006
        raise SpecError(
            "--host",
            f"{host} would show the job's logs to the network (TensorBoard has no "
            "authentication): keep the default 127.0.0.1 and reach it through an SSH tunnel "
            f"(ssh -L {tunnel}:127.0.0.1:{tunnel} HOST), or pass --insecure",
            value=host,
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise bind_error(host, port, exc) from None


def cmd_tensorboard(args: argparse.Namespace) -> int:
    check_listen(args.host, args.port, args.insecure)
    job, folder = job_folder(args.history, args.job_id)
    program = shutil.which("tensorboard", path=os.path.dirname(sys.executable)) or shutil.which(
        "tensorboard"
    )
    if program is None:
        raise CauceError("tensorboard is not installed: pip install 'cauce[tensorboard]'")
    port = args.port
    if port == 0:
        from cauce.cluster import free_ports

        port = free_ports(1, args.host)[0]
    print(f"cauce tensorboard: job {job}, logdir {folder}", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"http://{host}:{port}/", flush=True)
    argv = [program, "--logdir", folder, "--host", args.host, "--port", str(port)]
    os.execv(program, argv)
    return 0  # not reached
