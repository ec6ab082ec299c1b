"""A study's Optuna storage that rides out a database server that does not answer for a while.

Optuna's storage fails a call at once when the server does not answer it, which failed the whole
study at the first restart of a shared PostgreSQL. Here each call is made again, with backoff,
while the server does not answer, for as long as the history store tries its own writes again
(``CAUCE_LOST_AFTER``, ``cauce.history._writes``), and it is said once for both. A tuner asked to
stop (``HistoryStore.give_up``) stops trying at once.

A call whose commit went through but whose answer was lost is made again: setting a value or an
attribute again is harmless, a trial's end told again is taken as told (below), and a new trial
created again leaves a nameless trial behind, which the tuners take over once it stays silent
(``_recovery.py``) and run again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage, get_storage

from cauce.history import HistoryStore

if TYPE_CHECKING:
    from optuna.trial import TrialState

__all__ = ["PatientStorage"]


class PatientStorage(BaseStorage):
    """``inner`` (Optuna's RDB storage, cached as Optuna caches it for a study), each call
    made through ``store.patiently``."""

    def __init__(self, inner: BaseStorage, store: HistoryStore) -> None:
        self._inner = get_storage(inner)
        self._store = store

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        asked = False

        def call() -> bool:
            nonlocal asked
            if asked:  # the last try went unanswered: it may have been written
                trial = self._inner.get_trial(trial_id)
                if trial.state == state and state.is_finished():
                    return True
            asked = True
            return self._inner.set_trial_state_values(trial_id, state, values)

        return self._store.patiently(call)


def _patient(name: str) -> Callable[..., Any]:
    @functools.wraps(getattr(BaseStorage, name))
    def call(self: PatientStorage, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._inner, name)
        return self._store.patiently(lambda: method(*args, **kwargs))

    return call


# Every other method of the storage's interface goes to ``inner`` the same way.
for _name, _member in vars(BaseStorage).items():
    if callable(_member) and not _name.startswith("_") and _name not in vars(PatientStorage):
        setattr(PatientStorage, _name, _patient(_name))
PatientStorage.__abstractmethods__ = frozenset()
