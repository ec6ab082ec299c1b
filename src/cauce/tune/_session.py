"""The entry step of ``tune``: resolve the spec and the overrides, check once what every trial
would fail on, open the history store and the study, and hand them to the runner."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cauce.cluster import WarmStarts, cluster_address, get_cluster, open_cluster
from cauce.cluster.api import Cluster, HostCapacity
from cauce.errors import ClusterError
from cauce.gang import gang_request, preflight
from cauce.history import cauce_home, open_store
from cauce.spec import JobSpec
from cauce.tracking import RunLink, StudyTracking, open_study_tracking, without_tracking_env
from cauce.tune._entry import resolve_study
from cauce.tune._fit import fit_parallel
from cauce.tune._optuna import (
    distributions,
    import_optuna,
    load_study,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    patient_storage,
    run_of,
    study_meta,
    trial_info,
)
from cauce.tune._owner import TunerId
from cauce.tune._pool import PooledCluster, WorkerPool
from cauce.tune._runner import StudyRunner
from cauce.tune._verdict import first_rung_warning
from cauce.tune.api import (
    StudyInfo,
    StudyProgress,
    StudyResult,
    TrialInfo,
    TrialState,
    TuneConsole,
    best_trial,
)

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

__all__ = ["LogConsole", "read_studies", "read_trials", "run_study"]

logger = logging.getLogger(__name__)


class LogConsole:
    """The console of library callers who pass none: what happens goes to the log."""

    def started(self, progress: StudyProgress, note: str) -> None:
        logger.info(
            "study %s: %d of %d trials done", progress.study, progress.done, progress.target
        )
        if note:
            logger.info("study %s: %s", progress.study, note)

    def changed(self, trial: TrialInfo, progress: StudyProgress) -> None:
        logger.info(
            "study %s: trial %d %s %s", progress.study, trial.number, trial.state, trial.note
        )

    def tick(self, progress: StudyProgress) -> None:
        return None

    def finished(self, result: StudyResult) -> None:
        logger.info("study %s: %s %s", result.study, result.status, result.reason)


def run_study(
    job: JobSpec | str | os.PathLike[str],
    *,
    trials: int | None,
    parallel: int | None,
    study: str | None,
    cluster: str | None,
    history: str | None,
    home: Path | None,
    console: TuneConsole | None,
    poll_interval: float,
    tracking_parent: RunLink | None = None,
    warm: WarmStarts | None = None,
) -> StudyResult:
    spec, target, width, name = resolve_study(job, trials, parallel, study)
    assert spec.tune is not None
    import_optuna()
    address = cluster_address(cluster, spec)
    # What would fail every trial (a missing workdir or command, a gang that can never fit)
    # fails the study at once, before a trial is asked. The probe also keeps a Spark
    # application up for the trials' clusters, until the study ends.
    with open_cluster(address, spec) as probe:
        request = gang_request(spec, f"{name}-check")
        notes = preflight(spec, probe, request, os.environ)
        width, fit = fit_parallel(_hosts(probe), request, width)
        notice = "\n".join(
            line for line in (*notes, first_rung_warning(spec.tune.pruner), fit) if line
        )
        store = open_store(history)
        storage: RDBStorage | None = None
        pool: WorkerPool | None = None
        owned: WarmStarts | None = None
        try:
            storage = open_storage(store.url)
            patient = patient_storage(storage, store)  # rides out a server that stops answering
            handle = open_study(
                patient,
                name,
                metric=spec.tune.objective.metric,
                direction=spec.tune.objective.direction,
                job=spec.name,
                sampler=make_sampler(spec.tune, width),
                pruner=make_pruner(spec.tune),
                space=distributions(spec.tune),
            )
            existing = len(handle.get_trials(deepcopy=False))
            if existing:
                handle.sampler = make_sampler(spec.tune, width, seed_offset=existing)
            else:  # a new study: the given points first (kept in the storage, as the trials are)
                for point in spec.tune.start:
                    handle.enqueue_trial(dict(point))
            pool = _worker_pool(spec, address, width, home, name)
            if warm is None and spec.preload:
                warm = owned = WarmStarts()

            def make_cluster() -> Cluster:
                # Each trial's cluster is its driver's: closed when the trial ends. The warm
                # starts (preload:) are the study's: every trial's tasks fork from them.
                cluster = get_cluster(address, spark_conf=dict(spec.spark), warm=warm)
                return cluster if pool is None else PooledCluster(cluster, pool)

            tracking = _study_tracking(spec, name, home, tracking_parent)
            try:
                runner = StudyRunner(
                    spec=spec,
                    tune=spec.tune,
                    study=handle,
                    storage=patient,
                    store=store,
                    home=home if home is not None else cauce_home(),
                    make_cluster=make_cluster,
                    console=console or LogConsole(),
                    target=target,
                    parallel=width,
                    poll_interval=poll_interval,
                    notice=notice,
                    tracking=tracking,
                )
                result = runner.run()
            except BaseException:
                if tracking is not None:  # the study's run ends, failed
                    tracking.close("failed")
                raise
            if tracking is not None:
                best = result.best
                tracking.close(result.status, {"trial": best.number} if best else None)
            return result
        finally:
            if owned is not None:
                owned.close()
            if pool is not None:
                pool.close()
            if storage is not None:
                storage.engine.dispose()
            store.close()


def _worker_pool(
    spec: JobSpec, address: str, width: int, home: Path | None, name: str
) -> WorkerPool | None:
    """The workers that run the trials of an ``entrypoint`` on this host (None otherwise:
    trials of a command, or on a cluster of other hosts, run in fresh processes)."""
    assert spec.tune is not None
    if spec.tune.entrypoint is None or address != "local":
        return None
    return WorkerPool(
        spec.tune.entrypoint,
        cwd=spec.workdir,
        env={**without_tracking_env(os.environ), **dict(spec.env)},
        size=width,
        grace=spec.grace_period,
        log_dir=(home if home is not None else cauce_home()) / "studies" / name / "workers",
    )


def _hosts(cluster: Cluster) -> list[HostCapacity]:
    """What the cluster has, or nothing when it cannot say now (a Spark application whose
    executors have not registered yet)."""
    try:
        return cluster.describe()
    except ClusterError as exc:
        logger.debug("cannot describe the cluster: %s", exc)
        return []


def _study_tracking(
    spec: JobSpec, name: str, home: Path | None, parent: RunLink | None
) -> StudyTracking | None:
    folder = (home if home is not None else cauce_home()) / "studies" / name
    return open_study_tracking(
        spec, os.environ, folder, name, warn=lambda text: logger.warning("%s", text), parent=parent
    )


def read_trials(study: str, history: str | None) -> list[TrialInfo]:
    import_optuna()
    store = open_store(history)
    storage = open_storage(store.url)
    try:
        handle = load_study(storage, study)
        return [_annotate(t) for t in handle.get_trials(deepcopy=False)]
    finally:
        storage.engine.dispose()
        store.close()


def _annotate(frozen: FrozenTrial) -> TrialInfo:
    """A trial as stored, with a word on RUNNING trials whose tuner is gone."""
    info = trial_info(frozen)
    if info.state == TrialState.RUNNING:
        owner = TunerId.parse(run_of(frozen.user_attrs).get("tuner"))
        if owner is None or not owner.alive():
            return replace(info, note="its tuner is gone; the next 'cauce tune' retries it")
    return info


def read_studies(history: str | None) -> list[StudyInfo]:
    import_optuna()
    store = open_store(history)
    storage = open_storage(store.url)
    try:
        out = []
        for frozen in storage.get_all_studies():
            handle = load_study(storage, frozen.study_name)
            metric, direction, job = study_meta(handle)
            infos = tuple(trial_info(t) for t in handle.get_trials(deepcopy=False))
            counts: dict[str, int] = {}
            for info in infos:
                counts[info.state] = counts.get(info.state, 0) + 1
            out.append(
                StudyInfo(
                    name=frozen.study_name,
                    metric=metric,
                    direction=direction,
                    job=job,
                    counts=counts,
                    best=best_trial(infos, direction),
                )
            )
        return out
    finally:
        storage.engine.dispose()
        store.close()
