"""Everything that touches Optuna: distributions, samplers, pruners, the study in the history
database, and trials read back as :class:`TrialInfo`. Optuna is imported here only (and in
``_patient.py``, which only this module imports), lazily."""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from cauce.errors import CauceError, SpecError, SpecErrors
from cauce.history import HistoryStore, connect_args, schema_lock, shown_url
from cauce.spec import TuneSpec
from cauce.tune.api import TrialInfo, TrialState

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage, RDBStorage

__all__ = [
    "USER_ATTRS",
    "check_space",
    "describe",
    "distributions",
    "import_optuna",
    "load_study",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "open_study",
    "patient_storage",
    "run_of",
    "study_meta",
    "trial_info",
]

#: Study and trial attributes cauce keeps in Optuna's storage.
USER_ATTRS = {
    "metric": "cauce_metric",
    "direction": "cauce_direction",
    "job": "cauce_job",
    # {"job_id": the trial's job in the history, "tuner": "host:pid:start" of its tuner}
    "run": "cauce_run",
    "root_cause": "root_cause",
    "interrupted": "cauce_interrupted",
    "retry_of": "cauce_retry_of",
    "pruned_step": "cauce_pruned_step",
    "beat": "cauce_heartbeat",  # a count its tuner raises while it runs the trial
}


def import_optuna() -> None:
    """Fail with a one-line error naming the extra when Optuna is not installed."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CauceError(
            "tuning needs optuna: pip install 'cauce[tune]' (or pip install optuna)"
        ) from None


def distributions(tune: TuneSpec) -> dict[str, BaseDistribution]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for param in tune.space:
        if param.type == "choice":
            out[param.name] = CategoricalDistribution(list(param.values))
            continue
        assert param.low is not None and param.high is not None
        if param.type == "int":
            out[param.name] = IntDistribution(
                int(param.low), int(param.high), log=param.log, step=int(param.step or 1)
            )
        else:
            out[param.name] = FloatDistribution(
                param.low, param.high, log=param.type == "loguniform", step=param.step
            )
    return out


def make_sampler(
    tune: TuneSpec, parallel: int, seed_offset: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler of the spec. ``seed_offset`` shifts a given seed, so that a study that
    continues does not draw again the parameters its first run drew."""
    import optuna

    spec = replace(
        tune.sampler, seed=None if tune.sampler.seed is None else tune.sampler.seed + seed_offset
    )
    with warnings.catch_warnings():
        # Options Optuna marks experimental are fine here; a warning would only be noise.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if spec.type == "random":
            return optuna.samplers.RandomSampler(seed=spec.seed)
        if spec.type == "grid":
            grid = {p.name: list(p.grid() or ()) for p in tune.space}
            return _grid_class()(grid, seed=spec.seed)
        if spec.type == "cmaes":
            if importlib.util.find_spec("cmaes") is None:
                raise CauceError("sampler cmaes needs the cmaes package: pip install cmaes")
            return optuna.samplers.CmaEsSampler(
                seed=spec.seed,
                n_startup_trials=spec.startup_trials or 1,
                warn_independent_sampling=False,
            )
        return optuna.samplers.TPESampler(
            seed=spec.seed,
            n_startup_trials=10 if spec.startup_trials is None else spec.startup_trials,
            # Running trials count as bad guesses, so that parallel trials spread out.
            constant_liar=parallel > 1,
        )


def _grid_class() -> type[optuna.samplers.GridSampler]:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler asks the study to stop once the grid is covered, which only
        works inside ``study.optimize``; cauce counts the trials itself."""

        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            return None

    return GridSampler


def make_pruner(tune: TuneSpec) -> optuna.pruners.BasePruner:
    from optuna import pruners

    spec = tune.pruner
    if spec.type == "none":
        return pruners.NopPruner()
    if spec.type == "median":
        return pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps
        )
    if spec.type == "hyperband":
        return pruners.HyperbandPruner(
            min_resource=spec.min_steps,
            max_resource=spec.max_steps if spec.max_steps is not None else "auto",
            reduction_factor=spec.reduction_factor,
        )
    return pruners.SuccessiveHalvingPruner(
        min_resource=spec.min_steps, reduction_factor=spec.reduction_factor
    )


def open_storage(url: str) -> RDBStorage:
    """Optuna's RDB storage on the history database (its tables live beside cauce's)."""
    import optuna

    kwargs: dict[str, Any] = {"connect_args": connect_args(url)}
    if url.startswith("sqlite"):
        # Several threads write (trials report while the tuner asks and tells); wait for the
        # lock rather than fail. The history store has put the file in WAL mode.
        kwargs["connect_args"] = {"timeout": 60}
    try:
        with schema_lock(url):  # Optuna makes its tables on first use
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # SQLAlchemy or Alembic, whichever the backend raises
        raise CauceError(
            f"the study storage at {shown_url(url)!r} cannot be opened: {exc}"
        ) from exc
    if url.startswith("sqlite"):
        # As the history store does on the same file (in WAL mode): no fsync at each commit,
        # which cost Optuna's every report and tell 15 to 150 ms. A commit is still atomic,
        # and durable once checkpointed; a power cut may lose the last trials' writes.
        from sqlalchemy import event

        event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
        storage.engine.dispose()  # the connections of the set-up reopen with it
    return storage


def patient_storage(storage: RDBStorage, store: HistoryStore) -> BaseStorage:
    """``storage`` for a tuner: its calls made again while the server does not answer them
    (``_patient.py``)."""
    from cauce.tune._patient import PatientStorage

    return PatientStorage(storage, store)  # type: ignore[abstract]  # its methods: set in _patient.py


def _sqlite_synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def load_study(storage: BaseStorage, name: str) -> optuna.Study:
    """An existing study, for reading."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise CauceError(f"no study {name!r}; 'cauce trials' lists the studies") from None


def open_study(
    storage: BaseStorage,
    name: str,
    *,
    metric: str,
    direction: str,
    job: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    space: Mapping[str, BaseDistribution],
) -> optuna.Study:
    """The study ``name``, created if needed. A study keeps the objective it was created with,
    and each parameter's kind (:func:`check_space`): asking another one of it is refused."""
    import optuna

    wanted: Literal["minimize", "maximize"] = "minimize" if direction == "min" else "maximize"
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        try:
            study = optuna.create_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction=wanted
            )
        except optuna.exceptions.DuplicatedStudyError:  # another tuner created it just now
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
        study.set_user_attr(USER_ATTRS["metric"], metric)
        study.set_user_attr(USER_ATTRS["direction"], direction)
        study.set_user_attr(USER_ATTRS["job"], job)
        return study
    had_metric, had_direction, _ = study_meta(study)
    if (had_metric, had_direction) != (metric, direction):
        raise SpecError(
            "tune.objective",
            f"is {direction} {metric}, but study {name!r} was created to {had_direction} "
            f"{had_metric}: keep its objective, or name a new study with --study NAME",
        )
    check_space(study, space)
    return study


def check_space(study: optuna.Study, space: Mapping[str, BaseDistribution]) -> None:
    """Refuse a space that Optuna would refuse at the first ``ask``, before a trial is made: a
    parameter whose distribution is not compatible with the one the study's trials used (another
    kind or log scale, other choices; Optuna's own rule). Another range is fine, and so are
    parameters added or removed."""
    from optuna.distributions import check_distribution_compatibility

    used: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        used.update(trial.distributions)  # the latest trial's, for the message
    errors = []
    for name, new in space.items():
        old = used.get(name)
        if old is None:
            continue
        try:
            check_distribution_compatibility(old, new)
        except ValueError:
            errors.append(
                SpecError(
                    f"tune.space.{name}",
                    f"is {describe(new)}, but the trials of study {study.study_name!r} drew it "
                    f"from {describe(old)}, and a study keeps each parameter's type, scale and "
                    "choices: keep its space, or name a new study with --study NAME",
                )
            )
    SpecErrors.raise_any(errors)


def describe(dist: BaseDistribution) -> str:
    """A distribution as the ``tune.space`` entry that makes it, ``{type: int, low: 0, high: 3}``,
    in the same words for the study's trials and for the spec."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dist, CategoricalDistribution):
        values = ", ".join(v if isinstance(v, str) else json.dumps(v) for v in dist.choices)
        return f"{{type: choice, values: [{values}]}}"
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    kind = "int" if isinstance(dist, IntDistribution) else "loguniform" if dist.log else "uniform"
    fields = [f"type: {kind}", f"low: {_number(dist.low)}", f"high: {_number(dist.high)}"]
    if dist.step is not None and not (kind == "int" and dist.step == 1):
        fields.append(f"step: {_number(dist.step)}")
    if kind == "int" and dist.log:
        fields.append("log: true")
    return "{" + ", ".join(fields) + "}"


def _number(value: float) -> str:
    """``5`` for 5.0, as people write it in YAML; ``0.001`` as it is."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def study_meta(study: optuna.Study) -> tuple[str, str, str]:
    """(metric, direction, job name) of a study, as cauce recorded them."""
    attrs = study.user_attrs
    direction = attrs.get(USER_ATTRS["direction"]) or (
        "min" if study.direction.name == "MINIMIZE" else "max"
    )
    return (
        str(attrs.get(USER_ATTRS["metric"], "value")),
        str(direction),
        str(attrs.get(USER_ATTRS["job"], "")),
    )


def run_of(attrs: dict[str, Any]) -> dict[str, str]:
    """The trial's job id and tuner, as ``_start_trial`` recorded them."""
    run = attrs.get(USER_ATTRS["run"])
    return {str(k): str(v) for k, v in run.items()} if isinstance(run, dict) else {}


def trial_info(trial: optuna.trial.FrozenTrial) -> TrialInfo:
    """A trial as it is stored (a RUNNING one shows its last reported value)."""
    state = {
        "COMPLETE": TrialState.COMPLETE,
        "PRUNED": TrialState.PRUNED,
        "FAIL": TrialState.FAILED,
        "RUNNING": TrialState.RUNNING,
        "WAITING": TrialState.QUEUED,
    }[trial.state.name]
    attrs = trial.user_attrs
    value = trial.value
    step = trial.last_step
    if value is None and step is not None:
        value = trial.intermediate_values[step]
    note = ""
    if state == TrialState.FAILED:
        note = str(attrs.get(USER_ATTRS["root_cause"], ""))
    elif state == TrialState.PRUNED:
        note = f"pruned at step {attrs.get(USER_ATTRS['pruned_step'], step)}"
    elif state == TrialState.QUEUED and USER_ATTRS["retry_of"] in attrs:
        note = f"retry of trial {attrs[USER_ATTRS['retry_of']]}"
    return TrialInfo(
        number=trial.number,
        state=state,
        params=dict(trial.params),
        value=value,
        step=step,
        job_id=run_of(attrs).get("job_id"),
        started_at=trial.datetime_start.timestamp() if trial.datetime_start else None,
        ended_at=trial.datetime_complete.timestamp() if trial.datetime_complete else None,
        note=note,
    )


def quiet_optuna() -> None:
    """Optuna logs each trial through its own handler; the caller's logging configuration
    rules instead (``cauce -v`` shows them)."""
    import logging

    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(logging.getLogger().getEffectiveLevel())
