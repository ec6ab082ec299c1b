"""Typed job specs. Plain frozen data: no I/O, no probing of the machine."""

from __future__ import annotations

from dataclasses import dataclass, field

from cauce.spec._tune import TuneSpec


@dataclass(frozen=True)
class Resources:
    """What one task of a role needs. ``memory`` is in bytes, 0 meaning "not stated".

    ``cpus_declared`` is False when the spec did not state ``cpus``: the task counts as one CPU
    for its threads and for Spark, but a local host is not refused for having fewer CPUs than
    tasks (like ``torchrun --nproc-per-node N``, it is oversubscribed, with a note)."""

    cpus: float = 1.0
    memory: int = 0
    gpus: int = 0
    cpus_declared: bool = True


@dataclass(frozen=True)
class RoleSpec:
    """One role of a gang: ``instances`` identical tasks running ``command``."""

    name: str
    instances: int = 1
    command: str | tuple[str, ...] | None = None
    resources: Resources = field(default_factory=Resources)
    env: tuple[tuple[str, str], ...] = ()
    #: A tracked role must finish with exit 0 for the job to succeed; an untracked one (a
    #: TensorFlow parameter server, say) is stopped once every tracked task has finished.
    tracked: bool = True


@dataclass(frozen=True)
class RestartPolicy:
    """Restart the whole gang up to ``max_restarts`` times, waiting ``backoff`` seconds before
    the first restart and doubling the wait each time, up to ``max_backoff``. A task failure
    whose exit code is in ``never_on`` is permanent (126: not executable, 127: not found, as a
    shell says): the job fails at once, whatever restarts are left."""

    max_restarts: int = 0
    backoff: float = 1.0
    max_backoff: float = 60.0
    never_on: tuple[int, ...] = (126, 127)

    def delay(self, restart_number: int) -> float:
        """Seconds to wait before restart number ``restart_number`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * (2 ** max(0, restart_number - 1))))


@dataclass(frozen=True)
class TensorBoardSpec:
    """The ``tensorboard:`` section: each task gets ``CAUCE_TENSORBOARD_DIR``, a folder of its
    own for the job (``logdir/<job id>``, or ``tensorboard/`` in the run folder when ``logdir``
    is None), and the chief TonY's ``TB_PORT``; with ``report``, ``cauce.report`` writes its
    values there as TensorBoard scalars."""

    logdir: str | None = None
    report: bool = False


@dataclass(frozen=True)
class TrackingSpec:
    """The ``tracking:`` section (MLflow): where runs go. ``uri`` wins over
    ``$MLFLOW_TRACKING_URI`` and ``experiment`` over ``$MLFLOW_EXPERIMENT_NAME``; None leaves
    them to the environment. ``enabled`` False (``tracking: false``) turns tracking off even
    when ``$MLFLOW_TRACKING_URI`` is set. ``model`` names the registered model a pipeline's
    train step makes a version of (the pipeline's name when None)."""

    uri: str | None = None
    experiment: str | None = None
    model: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class JobSpec:
    """A validated job: one gang of tasks, grouped in roles."""

    name: str
    framework: str
    roles: tuple[RoleSpec, ...]
    command: str | tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "."
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: Seconds the whole job may run (all attempts together); None for no limit.
    timeout: float | None = None
    #: Seconds a task may go without a report or heartbeat before it is declared hung and the
    #: gang fails (then restarts, if the policy allows); None turns hang detection off.
    hang_timeout: float | None = None
    #: Seconds between SIGTERM and SIGKILL when a gang is stopped.
    grace_period: float = 10.0
    #: Cluster the spec asks for (``local``, ``spark://...``); None lets the caller decide.
    cluster: str | None = None
    #: The file the spec came from, for messages; "" when built in code.
    source: str = ""
    #: The hyperparameter search of ``cauce tune`` (the ``tune:`` section); ``cauce run``
    #: ignores it.
    tune: TuneSpec | None = None
    #: Spark settings (``spark.*`` keys, string values) for Spark clusters; other clusters
    #: ignore them. ``cauce run --conf key=value`` adds to and overrides these.
    spark: tuple[tuple[str, str], ...] = ()
    #: The ``tensorboard:`` section; None when the job has none.
    tensorboard: TensorBoardSpec | None = None
    #: The ``tracking:`` section (MLflow); None when the job has none (then
    #: ``$MLFLOW_TRACKING_URI``, if set, turns tracking on).
    tracking: TrackingSpec | None = None
    #: Modules that the local cluster imports once, in a process from which each Python task
    #: of the job is forked (``preload:``): a warm start, without those imports per task.
    preload: tuple[str, ...] = ()

    def role(self, name: str) -> RoleSpec:
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)

    def command_for(self, role: RoleSpec) -> str | tuple[str, ...]:
        command = role.command if role.command is not None else self.command
        if command is None:  # the parser refuses this; kept for specs built in code
            raise ValueError(f"role {role.name!r} has no command")
        return command

    @property
    def num_tasks(self) -> int:
        return sum(role.instances for role in self.roles)
