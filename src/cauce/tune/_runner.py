"""The tuner's loop: keep ``parallel`` trials running until the study has its trials.

Only this thread asks and tells the study; trials run in their own threads (one
:class:`JobDriver` each, with its own cluster object, so GPU leases and process reapers are per
trial) and send news through one queue.

Counting: the target is of trials that completed or were pruned, in the whole study (so a second
run continues the first). Failed trials do not count; more than ``max_failures`` of them in one
run stop the study. A trial left RUNNING by a tuner that is gone (``kill -9``) is marked failed as
interrupted and its parameters are queued again, so no trial is lost or counted twice.
"""

from __future__ import annotations

import logging
import math
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cauce._util.signals import handle_signals
from cauce.gang import JobDriver, new_job_id
from cauce.history import HistoryStore, shown_url, unanswered
from cauce.spec import JobSpec, TuneSpec
from cauce.tracking import JobTracking, StudyTracking
from cauce.tune._optuna import USER_ATTRS, distributions, trial_info
from cauce.tune._owner import TunerId
from cauce.tune._params import objective_task, trial_spec
from cauce.tune._recovery import Recovery
from cauce.tune._trial import TAKEN, Outcome, TrialRun
from cauce.tune._verdict import VerdictServer
from cauce.tune.api import StudyProgress, StudyResult, StudyStatus, TrialInfo, TuneConsole

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

    from cauce.cluster import Cluster

__all__ = ["StudyRunner"]

logger = logging.getLogger(__name__)

_TICK = 0.25  # seconds between two looks at the trials when nothing happens
_RECOUNT = 3.0  # seconds between two counts of the study's trials in the storage
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StudyRunner:
    def __init__(
        self,
        *,
        spec: JobSpec,
        tune: TuneSpec,
        study: optuna.Study,
        storage: BaseStorage,
        store: HistoryStore,
        home: Path,
        make_cluster: Callable[[], Cluster],
        console: TuneConsole,
        target: int,
        parallel: int,
        poll_interval: float = 0.25,
        notice: str = "",
        tracking: StudyTracking | None = None,
    ) -> None:
        """``notice``: what the entry step tells people once, at the start (``parallel``
        capped at what the host fits)."""
        self.spec = spec
        self.tune = tune
        self.study = study
        self.storage = storage  # the study's, for trials whose live Trial object is gone
        self.store = store
        self.home = home
        self.make_cluster = make_cluster
        self.console = console
        self.target = target
        self.parallel = parallel
        self.poll_interval = poll_interval
        self.notice = notice
        self.metric = tune.objective.metric
        self.direction = tune.objective.direction
        self.task = objective_task(spec, tune)
        self.recovery = Recovery(study, storage, store, TunerId.mine())
        self._dists = distributions(tune)
        self._events: queue.Queue[tuple[str, TrialRun]] = queue.Queue()
        self._running: dict[int, TrialRun] = {}
        self._trials: dict[int, TrialInfo] = {}
        self._failures = 0
        self._halt = ""  # why no new trial may start
        self._interrupt = ""
        # Complete + pruned trials of the study, and trials other tuners run, as last counted
        # in the storage; this tuner's own completions are added as they come.
        self._done = 0
        self._others = 0
        self._counted_at = -math.inf
        self._verdicts: VerdictServer | None = None
        self.tracking = tracking  # MLflow: the study's run; each trial a child run
        self._tracked: dict[int, JobTracking] = {}

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> StudyResult:
        taken = _numbers(self.recovery.recover(()))
        retried = f"trial(s) {taken} were interrupted by the end of an earlier run; retrying them"
        note = "\n".join(line for line in (self.notice, retried if taken else "") if line)
        self._reload()
        self.console.started(self.progress(), note)
        status, reason = StudyStatus.COMPLETE, ""
        if self.tune.pruner.type != "none":
            self._verdicts = VerdictServer()
        reachable = True
        try:
            with handle_signals(_STOP_SIGNALS, self._on_signal):
                status, reason = self._loop()
        except Exception as exc:
            words = unanswered(exc)
            if words is None:
                raise
            # Nothing more can be recorded: the trials running here are stopped and stay
            # RUNNING in the study, for the next tuner to retry (src/cauce/tune/_recovery.py).
            reachable = False
            self._abandon("the study's database stopped answering")
            shown = shown_url(self.store.url)
            status = StudyStatus.FAILED
            reason = (
                f"the study's database {shown} stopped answering ({words}); the trials running "
                "here were stopped, and the next 'cauce tune' of this study (on this host or "
                "another) retries them"
            )
        finally:
            if self._running:  # only after an unexpected error: leave nothing running
                self._shutdown("the tuner failed")
            if self._verdicts is not None:
                self._verdicts.close()
                self._verdicts = None
        if reachable:
            self._reload()
        result = StudyResult(
            study=self.study.study_name,
            status=status,
            reason=reason,
            metric=self.metric,
            direction=self.direction,
            trials=tuple(self._trials[n] for n in sorted(self._trials)),
            storage=self.store.url,
        )
        self.console.finished(result)
        return result

    def _loop(self) -> tuple[StudyStatus, str]:
        while True:
            self._drain(_TICK)
            if self._interrupt:
                self._shutdown(self._interrupt)
                return StudyStatus.INTERRUPTED, self._interrupt
            for run in list(self._running.values()):
                if run.prune_overdue(self.tune.prune_grace):
                    logger.info("trial %d: pruned but still running; stopping it", run.number)
            for number in self.recovery.beat(run.trial for run in self._running.values()):
                self._running[number].take_away(TAKEN)
            if not self._halt:
                self._fill()
            if not self._running:
                if self._halt:
                    return StudyStatus.FAILED, self._halt
                done, others = self._counts(fresh=True)
                if done >= self.target:
                    return StudyStatus.COMPLETE, ""
                if others == 0 and done < self.target:
                    continue  # _fill starts more at the next turn
                # The rest of the target is in trials another tuner runs; wait for them.
                taken = _numbers(self.recovery.recover(self._running))
                if taken:
                    what = "study %s: trial(s) %s taken over, their tuner gone; retrying them"
                    logger.warning(what, self.study.study_name, taken)
            self.console.tick(self.progress())

    def _drain(self, timeout: float) -> None:
        try:
            kind, run = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if kind == "ended":
                self._finish(run)
            elif run.number in self._running:
                self._trials[run.number] = run.info()
                self.console.changed(self._trials[run.number], self.progress())
            try:
                kind, run = self._events.get_nowait()
            except queue.Empty:
                return

    def _counts(self, fresh: bool = False) -> tuple[int, int]:
        """(complete + pruned trials, trials running in other tuners). Read from the storage
        when ``fresh`` or every few seconds (it reads every trial), else as last known."""
        now = time.monotonic()
        if not fresh and now - self._counted_at < _RECOUNT:
            return self._done, self._others
        import optuna

        states = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.RUNNING,
        )
        done = others = 0
        for trial in self.study.get_trials(deepcopy=False, states=states):
            if trial.state != optuna.trial.TrialState.RUNNING:
                done += 1
            elif trial.number not in self._running:
                others += 1
        self._done, self._others, self._counted_at = done, others, now
        return done, others

    def _fill(self) -> None:
        while len(self._running) < self.parallel:
            done, others = self._counts()
            if done + others + len(self._running) >= self.target:
                return
            self._start_trial()

    def _start_trial(self) -> None:
        trial = self.study.ask(self._dists)
        params = dict(trial.params)
        job_id = new_job_id(f"{self.study.study_name}-t{trial.number}")
        trial.set_user_attr(USER_ATTRS["run"], {"job_id": job_id, "tuner": self.recovery.me.text()})
        run = TrialRun(
            trial,
            params,
            metric=self.metric,
            task=self.task,
            events=self._events,
            pruning=self.tune.pruner.type != "none",
        )
        spec = trial_spec(self.spec, self.tune, params)
        if self._verdicts is not None:  # the objective task asks for verdicts as it reports
            extra = self._verdicts.env(self.tune.pruner, self.metric, self.task)
            given = {name for name, _ in spec.env}  # the job's own CAUCE_VERDICT_WAIT wins
            spec = replace(
                spec, env=(*spec.env, *((k, v) for k, v in extra.items() if k not in given))
            )
        cluster = None
        try:
            cluster = self.make_cluster()  # one per trial, closed when the trial ends
            if self.tracking is not None:
                tracked = self.tracking.trial(
                    spec, self.home / "runs" / job_id, job_id, trial.number
                )
                self._tracked[trial.number] = tracked
            driver = JobDriver(
                spec,
                cluster,
                self.store,
                self.home,
                console=run,
                job_id=job_id,
                params=params,
                on_metrics=run.on_metrics,
                kind="trial",
                poll_interval=self.poll_interval,
                tracking=self._tracked.get(trial.number),
            )
        except Exception as exc:
            if cluster is not None:
                _close(cluster)
            opened = self._tracked.pop(trial.number, None)
            if opened is not None:  # its run ends failed
                opened.close()
            trial.set_user_attr(USER_ATTRS["root_cause"], f"could not start: {exc}")
            self.study.tell(trial, state=_state("FAIL"))
            raise
        self._running[trial.number] = run
        if self._verdicts is not None:
            self._verdicts.register(job_id, run.judge)
        run.start(driver)
        self._trials[trial.number] = run.info()
        self.console.changed(self._trials[trial.number], self.progress())

    def _finish(self, run: TrialRun) -> None:
        self._running.pop(run.number, None)
        run.join()
        if self._verdicts is not None:
            self._verdicts.unregister(run.job_id)
        outcome = None
        try:
            outcome = run.outcome()
            frozen = self._tell(run, outcome)
            if frozen is None:  # another tuner ended it meanwhile (_recovery.py)
                frozen = self.recovery.taken_over(run.number)
        finally:  # after the tell: the trial is recorded as ended first
            if run.driver is not None:
                _close(run.driver.cluster)
            tracked = self._tracked.pop(run.number, None)
            if tracked is not None and (self.tracking is None or outcome is None):
                tracked.close()  # its run ends failed
            elif tracked is not None and self.tracking is not None and outcome is not None:
                self.tracking.trial_ended(
                    tracked, outcome.state, value=outcome.value, pruned_step=run.pruned_step
                )
        info = replace(trial_info(frozen), started_at=run.started_at, ended_at=run.ended_at)
        self._trials[run.number] = info
        self.console.changed(info, self.progress())

    def _tell(self, run: TrialRun, outcome: Outcome) -> optuna.trial.FrozenTrial | None:
        """Record ``outcome`` in the study; None if another tuner has ended the trial."""
        import optuna

        trial = run.trial
        try:
            if outcome.state == "taken":
                return None
            if outcome.state == "interrupted":
                return self.recovery.retry(trial.number, params=run.params, cause=outcome.cause)
            if outcome.state == "failed":
                trial.set_user_attr(USER_ATTRS["root_cause"], outcome.cause)
                frozen = self.study.tell(trial, state=_state("FAIL"))
                self._failures += 1
                if self._failures > self.tune.max_failures and not self._halt:
                    self._halt = (
                        f"{self._failures} trials failed (max_failures "
                        f"{self.tune.max_failures}); the last one: {outcome.cause}"
                    )
                return frozen
            if outcome.state == "pruned":
                trial.set_user_attr(USER_ATTRS["pruned_step"], run.pruned_step)
                frozen = self.study.tell(trial, state=_state("PRUNED"))
            else:
                frozen = self.study.tell(trial, outcome.value)
        except optuna.exceptions.UpdateFinishedTrialError:
            return None
        self._done += 1
        return frozen

    def _shutdown(self, reason: str) -> None:
        """Stop every running trial now and queue them again (they were cut short)."""
        for run in list(self._running.values()):
            run.interrupt(reason)
        for run in list(self._running.values()):
            run.join()
        self._drain(0.0)

    def _abandon(self, reason: str) -> None:
        """Stop every running trial without recording how they ended (the storage is gone)."""
        self.store.give_up()  # their drivers' writes to the history fail at once, not in a minute
        for run in list(self._running.values()):
            run.interrupt(reason)
        for run in list(self._running.values()):
            run.join()
        self._running.clear()

    # --- what people see -----------------------------------------------------------------------

    def _reload(self) -> None:
        for frozen in self.study.get_trials(deepcopy=False):
            if frozen.number not in self._running:
                self._trials[frozen.number] = trial_info(frozen)

    def progress(self) -> StudyProgress:
        return StudyProgress(
            study=self.study.study_name,
            metric=self.metric,
            direction=self.direction,
            target=self.target,
            parallel=self.parallel,
            trials=tuple(self._trials[n] for n in sorted(self._trials)),
            failures=self._failures,
            max_failures=self.tune.max_failures,
        )

    def _on_signal(self, signum: int) -> None:
        """SIGINT, SIGTERM and SIGHUP stop the running trials (to be retried) and end the run."""
        self._interrupt = f"interrupted ({signal.Signals(signum).name})"
        self.store.give_up()  # a history that does not answer does not hold the stop up


def _close(cluster: Cluster) -> None:
    close = getattr(cluster, "close", None)
    if callable(close):
        close()


def _state(name: str) -> optuna.trial.TrialState:
    import optuna

    return optuna.trial.TrialState[name]


def _numbers(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)
