"""One distributed job: placement, env contract, supervision, restarts."""

from cauce.gang._console import Console, PrintConsole
from cauce.gang._driver import JobDriver
from cauce.gang._machine import Failure, GangMachine, Phase
from cauce.gang._plan import gang_request, warm_launches
from cauce.gang._preflight import preflight
from cauce.gang._record import new_job_id
from cauce.gang._result import JobResult
from cauce.gang._tensorboard import tensorboard_dir

__all__ = [
    "Console",
    "Failure",
    "GangMachine",
    "JobDriver",
    "JobResult",
    "Phase",
    "PrintConsole",
    "gang_request",
    "new_job_id",
    "preflight",
    "tensorboard_dir",
    "warm_launches",
]
