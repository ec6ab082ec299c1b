"""Trials whose tuner is gone: found, failed as interrupted and queued again, so that no trial
is lost or counted twice.

A tuner on this host is gone when its process is (pid and start time). One on another host,
which no process table here can show, is gone when its heartbeat stops: each tuner writes one
into its running trials' attributes every ``lost_after / 6`` seconds, and another tuner that sees
a trial's heartbeat unchanged for ``lost_after`` seconds of its own clock (so clocks need not
agree) takes the trial over. ``CAUCE_LOST_AFTER`` sets it (60 s by default).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from cauce.history import HistoryStore, JobStatus, lost_after
from cauce.tune._optuna import USER_ATTRS, run_of
from cauce.tune._owner import TunerId

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = ["Recovery"]

logger = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self, study: optuna.Study, storage: BaseStorage, store: HistoryStore, me: TunerId
    ) -> None:
        self.study = study
        self.storage = storage  # for trials whose live Trial object is gone
        self.store = store
        self.me = me
        self.lost_after = lost_after()
        self._next_beat = 0.0
        self._beats = 0
        self._seen: dict[int, tuple[object, float]] = {}  # trial -> (heartbeat, seen since)

    def beat(self, trials: Iterable[optuna.Trial]) -> list[int]:
        """Say that this tuner lives, in its running trials, at most every ``lost_after / 6``;
        the numbers of those that another tuner has ended meanwhile (taken over: this tuner's
        heartbeat had stopped for ``lost_after``, its host cut off or its process stopped)."""
        import optuna

        now = time.monotonic()
        if now < self._next_beat:
            return []
        self._next_beat = now + self.lost_after / 6
        self._beats += 1
        taken = []
        for trial in trials:
            try:
                trial.set_user_attr(USER_ATTRS["beat"], self._beats)
            except optuna.exceptions.UpdateFinishedTrialError:
                taken.append(trial.number)
        return taken

    def taken_over(self, number: int) -> optuna.trial.FrozenTrial:
        """Trial ``number`` of this tuner as another tuner ended it, said once."""
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        frozen = self.storage.get_trial(trial_id)
        logger.warning(
            "trial %d was taken over by another tuner of the study (%s): this tuner's heartbeat "
            "had stopped (its host cut off, or its process stopped); what it did here is "
            "dropped, and the trial runs again there",
            number,
            frozen.user_attrs.get(USER_ATTRS["root_cause"], frozen.state.name.lower()),
        )
        return frozen

    def recover(self, mine: Collection[int]) -> list[int]:
        """Fail and re-queue the RUNNING trials (not in ``mine``) whose tuner is gone; their
        numbers."""
        import optuna

        taken = []
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for number in self._seen.keys() - {trial.number for trial in running}:
            del self._seen[number]  # ended meanwhile: nothing to watch
        for trial in running:
            if trial.number in mine:
                continue
            run = run_of(trial.user_attrs)
            owner = TunerId.parse(run.get("tuner"))
            cause = self._gone(trial, owner)
            if cause is None:
                continue
            self._lose_job(run.get("job_id"), cause)
            try:
                self.retry(trial.number, params=dict(trial.params), cause=cause)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another tuner took it over just now, or its own ended it
            taken.append(trial.number)
        return taken

    def _gone(self, trial: optuna.trial.FrozenTrial, owner: TunerId | None) -> str | None:
        """Why ``trial``'s tuner is gone, or None while it may live."""
        if owner is None:
            # A tuner writes its name into a trial just after asking for it: a trial seen in
            # between is another tuner's, about to say so (taken over at once, it was run twice
            # under load); one that stays nameless and silent lost its tuner in between.
            return self._silent(trial, "interrupted: the tuner that asked for it is gone")
        if owner == self.me or not owner.alive():  # me: an earlier run in this process
            return f"interrupted: the tuner running it (pid {owner.pid}) is gone"
        if owner.host == self.me.host:
            return None  # alive, on this host
        return self._silent(
            trial,
            f"interrupted: the tuner running it (pid {owner.pid} on {owner.host}) sent no "
            f"heartbeat for {self.lost_after:g} s",
        )

    def _silent(self, trial: optuna.trial.FrozenTrial, cause: str) -> str | None:
        """``cause`` once ``trial``'s heartbeat has not changed for ``lost_after`` seconds of
        this tuner's clock; None until then."""
        beat = trial.user_attrs.get(USER_ATTRS["beat"])
        now = time.monotonic()
        seen = self._seen.get(trial.number)
        if seen is None or seen[0] != beat:
            self._seen[trial.number] = (beat, now)
            return None
        # A silence that this tuner saw while it could not reach the database itself says
        # nothing: the other tuner was as cut off, and beats again as soon as it is back.
        since = max(seen[1], self.store.answering_since())
        return cause if now - since >= self.lost_after else None

    def retry(
        self, number: int, *, params: dict[str, object], cause: str
    ) -> optuna.trial.FrozenTrial:
        """Mark trial ``number`` failed as interrupted and queue its parameters again."""
        import optuna

        # Optuna's Study sets attributes through a live Trial only; a trial of a tuner that is
        # gone has none, so this goes to the storage directly.
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self.storage.set_trial_user_attr(trial_id, USER_ATTRS["root_cause"], cause)
        self.storage.set_trial_user_attr(trial_id, USER_ATTRS["interrupted"], True)
        frozen = self.study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        self.study.enqueue_trial(params, user_attrs={USER_ATTRS["retry_of"]: number})
        return frozen

    def _lose_job(self, job_id: object, cause: str) -> None:
        if not isinstance(job_id, str):
            return
        with contextlib.suppress(Exception):
            job = self.store.get_job(job_id)
            if job.status.active:
                self.store.update_job(
                    job_id, status=JobStatus.LOST, root_cause=cause, ended_at=time.time()
                )
