"""The ``tune:`` section: parsing, refusals by field path, and how parameters reach a trial.
No processes here, except a few `cauce tune` refusals that exit before starting any trial."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import cauce.tune as tune_package
from cauce import SpecError, parse_job
from cauce.spec import JobSpec
from cauce.tune._params import objective_task, substitute, trial_spec
from helpers import cauce as cauce_cli
from helpers import write_job

BASE: dict[str, Any] = {"name": "t", "command": "python train.py --lr {lr}"}
SPACE = {"lr": {"type": "loguniform", "low": 1e-4, "high": 0.1}}


def job(tune: Any, **fields: Any) -> JobSpec:
    return parse_job({**BASE, **fields, "tune": tune}, source="job.yaml")


def test_a_full_section_is_read() -> None:
    spec = job(
        {
            "objective": {"metric": "val_loss", "direction": "min"},
            "space": {
                "lr": {"type": "loguniform", "low": 1e-4, "high": 0.1},
                "hidden": {"type": "int", "low": 8, "high": 64, "step": 8},
                "dropout": {"type": "uniform", "low": 0.0, "high": 0.5, "step": 0.1},
                "opt": {"type": "choice", "values": ["sgd", "adam"]},
            },
            "trials": 12,
            "parallel": 2,
            "sampler": {"type": "tpe", "seed": 3},
            "pruner": {"type": "hyperband", "min_steps": 1, "max_steps": 27},
            "max_failures": 1,
            "prune_grace": 2,
        }
    )
    tune = spec.tune
    assert tune is not None
    assert (tune.trials, tune.parallel, tune.max_failures, tune.prune_grace) == (12, 2, 1, 2.0)
    assert [p.name for p in tune.space] == ["lr", "hidden", "dropout", "opt"]
    assert tune.param("hidden").grid() == (8, 16, 24, 32, 40, 48, 56, 64)
    assert tune.param("dropout").grid() == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    assert tune.param("lr").grid() is None
    assert tune.sampler.seed == 3 and tune.pruner.max_steps == 27
    assert tune.objective.task is None


def test_defaults_and_short_forms() -> None:
    tune = job({"objective": {"metric": "loss", "direction": "max"}, "space": SPACE}).tune
    assert tune is not None
    assert (tune.trials, tune.parallel, tune.max_failures) == (20, 1, 3)
    assert (tune.sampler.type, tune.pruner.type, tune.pruner.reduction_factor) == (
        "tpe",
        "hyperband",
        3,
    )
    short = job(
        {
            "objective": {"metric": "loss", "direction": "min"},
            "space": SPACE,
            "sampler": "random",
            "pruner": "none",
        }
    ).tune
    assert short is not None and (short.sampler.type, short.pruner.type) == ("random", "none")
    # a mapping without type: is of the default type, with that type's keys
    untyped = job(
        {
            "objective": {"metric": "loss", "direction": "min"},
            "space": SPACE,
            "sampler": {"seed": 4},
            "pruner": {"max_steps": 27},
        }
    ).tune
    assert untyped is not None and (untyped.sampler.type, untyped.sampler.seed) == ("tpe", 4)
    assert (untyped.pruner.type, untyped.pruner.max_steps) == ("hyperband", 27)


def test_a_job_without_tune_is_unchanged() -> None:
    spec = parse_job(BASE)
    assert spec.tune is None


def test_grid_trials_default_to_the_grid_size() -> None:
    space = {
        "n": {"type": "int", "low": 1, "high": 3},
        "opt": {"type": "choice", "values": ["a", "b"]},
    }
    tune = job(
        {"objective": {"metric": "m", "direction": "min"}, "space": space, "sampler": "grid"}
    ).tune
    assert tune is not None and tune.trials == 6 and tune.grid_size() == 6


OBJ = {"metric": "loss", "direction": "min"}


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        (
            {"objective": OBJ, "space": {"lr": {"type": "loguniform", "low": 0, "high": 1}}},
            "tune.space.lr.low must be > 0 for loguniform, got 0",
        ),
        (
            {"objective": OBJ, "space": {"lr": {"type": "uniform", "low": 1, "high": 0.5}}},
            "tune.space.lr.high must be greater than low (1), got 0.5",
        ),
        (
            {"objective": OBJ, "space": {"lr": {"type": "logunifrom", "low": 1, "high": 2}}},
            "tune.space.lr.type must be one of uniform, loguniform, int, choice, got "
            "'logunifrom' (did you mean 'loguniform'?)",
        ),
        (
            {"objective": OBJ, "space": {"lr": {"type": "uniform", "low": 0, "hihg": 1}}},
            "tune.space.lr.hihg is not a known field; did you mean 'high'?",
        ),
        (
            {"objective": OBJ, "space": {"n": {"type": "int", "low": 1.5, "high": 4}}},
            "tune.space.n.low must be a whole number for type int, got 1.5",
        ),
        (
            {"objective": OBJ, "space": {"n": {"type": "int", "low": 0, "high": 10, "step": 3}}},
            "tune.space.n.step must divide high - low (10) into whole steps, got 3",
        ),
        (
            {
                "objective": OBJ,
                "space": {"n": {"type": "int", "low": 1, "high": 8, "log": True, "step": 2}},
            },
            "tune.space.n.step must be 1 with log: true, got 2",
        ),
        (
            {"objective": OBJ, "space": {"o": {"type": "choice", "values": []}}},
            "tune.space.o.values must be a non-empty list of strings, numbers or booleans",
        ),
        (
            {"objective": OBJ, "space": {"o": {"type": "choice", "values": ["a", "a"]}}},
            "tune.space.o.values lists 'a' twice",
        ),
        (  # Optuna stores True for 1 (its index of the first equal choice)
            {"objective": OBJ, "space": {"o": {"type": "choice", "values": [1, True]}}},
            "tune.space.o.values lists 1 and True, which are equal in Python: Optuna would "
            "record one as the other; keep one, or quote them as strings",
        ),
        (
            {"objective": OBJ, "space": {"o": {"low": 1}}},
            "tune.space.o.type is missing: give one of uniform, loguniform, int, choice",
        ),
        (
            {"objective": OBJ, "space": {"my-lr": {"type": "uniform", "low": 0, "high": 1}}},
            "tune.space.my-lr is not a valid parameter name",
        ),
        (
            {
                "objective": OBJ,
                "space": {
                    "lr": {"type": "uniform", "low": 0, "high": 1},
                    "LR": {"type": "uniform", "low": 0, "high": 1},
                },
            },
            "tune.space.LR clashes with tune.space.lr: both become CAUCE_PARAM_LR",
        ),
        ({"objective": OBJ, "space": {}}, "tune.space is empty"),
        ({"space": SPACE}, "tune.objective is missing"),
        ({"objective": OBJ}, "tune.space is missing"),
        (
            {"objective": {"metric": "loss", "direction": "minimize"}, "space": SPACE},
            "tune.objective.direction must be min or max",
        ),
        (
            {
                "objective": {"metric": "loss", "direction": "min", "task": "worker-3"},
                "space": SPACE,
            },
            "tune.objective.task must be one of worker-0",
        ),
        ({"objective": OBJ, "space": SPACE, "trials": 0}, "tune.trials must be >= 1, got 0"),
        ({"objective": OBJ, "space": SPACE, "parallel": 0}, "tune.parallel must be >= 1, got 0"),
        ({"objective": OBJ, "space": SPACE, "parralel": 2}, "did you mean 'parallel'?"),
        (
            {"objective": OBJ, "space": SPACE, "sampler": "bayes"},
            "tune.sampler.type must be one of tpe, random, grid, cmaes, got 'bayes'",
        ),
        (
            {"objective": OBJ, "space": SPACE, "pruner": {"type": "asha", "warmup_steps": 2}},
            "tune.pruner.warmup_steps is not a known field",
        ),
        (
            {"objective": OBJ, "space": SPACE, "pruner": {"type": "asha", "reduction_factor": 1}},
            "tune.pruner.reduction_factor must be >= 2, got 1",
        ),
        (
            {"objective": OBJ, "space": SPACE, "sampler": "grid"},
            "tune.space.lr cannot be searched by the grid sampler",
        ),
        (
            {
                "objective": OBJ,
                "sampler": "grid",
                "trials": 3,
                "space": {"o": {"type": "choice", "values": [1, 2]}},
            },
            "tune.trials must be <= 2, the number of points of the grid (sampler grid), got 3",
        ),
        (
            {
                "objective": OBJ,
                "sampler": "cmaes",
                "space": {"o": {"type": "choice", "values": [1, 2]}},
            },
            "tune.sampler cmaes needs at least one uniform, loguniform or int parameter",
        ),
        ("random", "tune must be a mapping like"),
        (
            {"objective": OBJ, "space": SPACE, "start": {"lr": 0.01}},
            "tune.start must be a list of points like [{lr: 0.005, batch_size: 1024}]",
        ),
        (
            {"objective": OBJ, "space": SPACE, "start": [{"lr": 0.01, "lrr": 1}]},
            "tune.start[0].lrr is not a parameter of tune.space (lr)",
        ),
        (
            {"objective": OBJ, "space": SPACE, "start": [{"lr": 0.5}]},
            "tune.start[0].lr must be within [0.0001, 0.1], the parameter's range, got 0.5",
        ),
        (
            {
                "objective": OBJ,
                "space": {"o": {"type": "choice", "values": [1, 2]}},
                "start": [{"o": 3}],
            },
            "tune.start[0].o must be one of [1, 2], got 3",
        ),
        (
            {"objective": OBJ, "space": SPACE, "entrypoint": "train.main"},
            "tune.entrypoint must be module:function, like train:main, got 'train.main'",
        ),
    ],
)
def test_refusals_name_the_field_the_value_and_the_fix(tune: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        job(tune)
    assert message in str(caught.value)
    assert str(caught.value).startswith("job.yaml: tune")
    assert "\n" not in str(caught.value)


def test_substitution_quotes_for_the_shell_and_keeps_list_items_whole() -> None:
    params = {"lr": 0.001, "opt": "adam w", "flag": True, "n": 3}
    assert substitute("train --lr {lr} --opt {opt} --n {n} {flag} {other} ${HOME}", params) == (
        "train --lr 0.001 --opt 'adam w' --n 3 true {other} ${HOME}"
    )
    assert substitute(("train", "--opt={opt}", "{lr}"), params) == (
        "train",
        "--opt=adam w",
        "0.001",
    )


def test_trial_spec_sets_the_command_the_variables_and_drops_tune() -> None:
    spec = parse_job(
        {
            "command": "python t.py --lr {lr}",
            "env": {"CAUCE_PARAM_LR": "stale", "KEEP": "1"},
            "roles": {"worker": {"instances": 2}, "chief": {"command": ["python", "c.py", "{n}"]}},
            "tune": {
                "objective": OBJ,
                "space": {
                    "lr": {"type": "loguniform", "low": 1e-4, "high": 0.1},
                    "n": {"type": "int", "low": 1, "high": 4},
                },
            },
        },
        source="x.yaml",
    )
    assert spec.tune is not None
    trial = trial_spec(spec, spec.tune, {"lr": 0.01, "n": 2})
    assert trial.tune is None
    assert trial.command == "python t.py --lr 0.01"
    assert trial.role("chief").command == ("python", "c.py", "2")
    env = dict(trial.env)
    assert env["CAUCE_PARAM_LR"] == "0.01" and env["CAUCE_PARAM_N"] == "2" and env["KEEP"] == "1"
    assert json.loads(env["CAUCE_PARAMS"]) == {"lr": 0.01, "n": 2}
    # the objective is rank 0's task: the chief comes first
    assert objective_task(spec, spec.tune) == "chief-0"


def test_objective_task_skips_service_roles() -> None:
    spec = parse_job(
        {
            "framework": "mxnet",
            "command": "x",
            "roles": {"scheduler": {}, "server": {}, "worker": {"instances": 2}},
            "tune": {"objective": OBJ, "space": SPACE},
        }
    )
    assert spec.tune is not None and objective_task(spec, spec.tune) == "worker-0"


def test_public_names_are_listed() -> None:
    exported = set(tune_package.__all__)
    public = {
        name
        for name, value in vars(tune_package).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= exported, sorted(public - exported)
    assert all(hasattr(tune_package, name) for name in exported)


def test_importing_cauce_tune_does_not_import_optuna() -> None:
    import subprocess

    code = "import sys, cauce.tune, cauce.cli.main; cauce.cli.main.build_parser(); "
    code += "sys.exit('optuna' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_cli_refuses_a_job_without_tune(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(tmp_path, "command: 'true'\n")
    done = cauce_cli(["tune", str(path)], cauce_env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: {path}: tune is missing: cauce tune needs a tune: section with objective and "
        "space (see docs/tuning.md)"
    ]


def test_cli_refuses_a_bad_space_in_one_line(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(
        tmp_path,
        """
        command: 'true'
        tune:
          objective: {metric: loss, direction: min}
          space:
            lr: {type: loguniform, low: 0, high: 1}
        """,
    )
    for command in (["tune", str(path)], ["run", str(path)]):
        done = cauce_cli(command, cauce_env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            f"error: {path}:5: tune.space.lr.low must be > 0 for loguniform, got 0"
        ]


def test_cli_refuses_more_trials_than_the_grid(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(
        tmp_path,
        """
        command: 'true'
        tune:
          objective: {metric: loss, direction: min}
          space:
            n: {type: int, low: 1, high: 2}
          sampler: grid
        """,
    )
    done = cauce_cli(["tune", str(path), "--trials", "5"], cauce_env)
    assert done.returncode == 2, done.stderr
    assert "--trials must be <= 2, the number of points of the grid" in done.stderr
    # an empty study name is refused, not read as "the job's name"
    done = cauce_cli(["tune", str(path), "--study", ""], cauce_env)
    assert done.returncode == 2, done.stderr
    assert "--study must be 1-63 letters, digits, '.', '_' or '-'" in done.stderr
    assert "got ''" in done.stderr


def test_parallel_is_capped_at_the_trials_the_host_fits() -> None:
    from cauce.cluster.api import HostCapacity
    from cauce.gang import gang_request
    from cauce.tune._fit import fit_parallel

    spec = parse_job(
        {
            "command": "python -c pass",
            "roles": {"worker": {"instances": 2, "resources": {"cpus": 0.5, "gpus": 1}}},
        }
    )
    request = gang_request(spec, "j")
    host = HostCapacity("127.0.0.1", 8.0, 0, ("0", "1", "2", "3"))
    width, note = fit_parallel([host], request, 4)
    assert width == 2
    assert note == (
        "parallel 4, but this host fits 2 trials at a time (each needs 2 GPUs, the host has "
        "4): running 2 at a time, the next as soon as one ends"
    )
    assert fit_parallel([host], request, 2) == (2, "")  # fits: nothing to say
    assert fit_parallel([host, host], request, 4) == (4, "")  # several hosts: theirs to place
    small = HostCapacity("127.0.0.1", 1.5, 0, ("0", "1", "2", "3"))
    assert fit_parallel([small], request, 4)[0] == 1  # by CPUs: 1 of 1.5


def test_an_entrypoint_needs_a_job_of_one_task() -> None:
    tune = {"objective": OBJ, "space": SPACE, "entrypoint": "train:main"}
    assert job(tune).tune is not None and job(tune).tune.entrypoint == "train:main"
    with pytest.raises(SpecError) as caught:
        job(tune, roles={"worker": {"instances": 2}})
    assert str(caught.value) == (
        "job.yaml: tune.entrypoint needs a job of one task, this one has 2 (worker-0, "
        "worker-1): remove entrypoint, and trials run the command"
    )


def test_a_first_rung_of_a_single_report_is_warned_of() -> None:
    from cauce.tune._verdict import first_rung_warning

    def warning(pruner: Any) -> str:
        spec = job({"objective": OBJ, "space": SPACE, "pruner": pruner}).tune
        assert spec is not None
        return first_rung_warning(spec.pruner)

    assert warning("asha").startswith("warning: pruner asha with min_steps 1 judges trials")
    assert warning({"type": "median"}).startswith("warning: pruner median with warmup_steps 0")
    assert warning({"type": "asha", "min_steps": 3}) == ""
    assert warning({"type": "median", "warmup_steps": 3}) == ""
    assert warning("hyperband") == warning("none") == ""


def test_a_verdict_wait_out_of_range_does_not_break_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """CAUCE_VERDICT_WAIT is in the job's env: inf, nan or negative turn prompt verdicts off,
    a huge one is capped (it made report raise OverflowError)."""
    import socket
    import threading

    from cauce.runtime._verdict import Verdicts

    name = f"cauce-test-verdict-{id(monkeypatch)}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.makefile("rb").readline()
            conn.sendall(b"stop too slow\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    env = {
        "CAUCE_VERDICT_ADDRESS": "@" + name,
        "CAUCE_VERDICT_TASK": "worker-0",
        "CAUCE_TASK_ID": "worker-0",
        "CAUCE_VERDICT_STEPS": "from:0",
        "CAUCE_VERDICT_METRIC": "loss",
    }
    try:
        for wait, verdict in (("inf", None), ("nan", None), ("-1", None), ("1e12", "too slow")):
            monkeypatch.setenv("CAUCE_JOB_ID", f"job-{wait}")
            for key, value in {**env, "CAUCE_VERDICT_WAIT": wait}.items():
                monkeypatch.setenv(key, value)
            assert Verdicts().ask(1, {"loss": 0.5}) == verdict, wait
    finally:
        thread.join(5)
        server.close()


def test_a_study_refuses_exactly_the_space_changes_optuna_refuses() -> None:
    import optuna

    from cauce.tune._optuna import check_space, distributions

    def space(**params: Any) -> Any:
        return distributions(
            job({"objective": {"metric": "loss", "direction": "min"}, "space": params}).tune
        )

    study = optuna.create_study(study_name="s", storage=optuna.storages.InMemoryStorage())
    first = space(
        lr={"type": "loguniform", "low": 1e-4, "high": 0.1},
        n={"type": "int", "low": 1, "high": 4},
        opt={"type": "choice", "values": ["sgd", "adam"]},
    )
    params = {"lr": 0.01, "n": 2, "opt": "adam"}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=first, value=1.0))
    kept = {
        "lr": {"type": "loguniform", "low": 1e-5, "high": 1.0},  # another range
        "n": {"type": "int", "low": 2, "high": 8, "step": 2},  # another range and step
        "opt": {"type": "choice", "values": ["sgd", "adam"]},
    }
    check_space(study, space(**kept))
    check_space(study, space(lr=kept["lr"], new={"type": "uniform", "low": 0, "high": 1}))
    refused = {
        "lr": {"type": "uniform", "low": 1e-4, "high": 0.1},  # the log scale
        "n": {"type": "int", "low": 1, "high": 4, "log": True},
        "opt": {"type": "choice", "values": ["adam", "sgd"]},  # the same choices, in another order
    }
    for name, entry in refused.items():
        new = space(**{**kept, name: entry})
        with pytest.raises(ValueError):  # Optuna's own rule, at the first ask
            optuna.distributions.check_distribution_compatibility(first[name], new[name])
        with pytest.raises(SpecError, match=f"^tune.space.{name} is ") as caught:
            check_space(study, new)
        assert "keep its space, or name a new study with --study NAME" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        check_space(study, space(opt={"type": "choice", "values": ["sgd", "adam", 1, False]}))
    assert str(caught.value) == (
        "tune.space.opt is {type: choice, values: [sgd, adam, 1, false]}, but the trials of study "
        "'s' drew it from {type: choice, values: [sgd, adam]}, and a study keeps each "
        "parameter's type, scale and choices: keep its space, or name a new study with --study "
        "NAME"
    )
    assert len(study.trials) == 1


def test_how_long_another_hosts_driver_or_tuner_may_be_silent_is_checked() -> None:
    from cauce.errors import CauceError
    from cauce.history import LOST_AFTER, lost_after

    assert lost_after({}) == LOST_AFTER == 60
    assert lost_after({"CAUCE_LOST_AFTER": "15"}) == 15
    for bad in ("soon", "0", "-5", "nan", "1e9"):
        with pytest.raises(CauceError, match=r"CAUCE_LOST_AFTER=.*between 1 and 86400"):
            lost_after({"CAUCE_LOST_AFTER": bad})


def test_a_trial_its_tuner_has_not_named_yet_is_not_taken_over_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tuner writes its name into a trial just after asking for it. Another tuner that looks
    in between waits, as for a tuner on another host (taken over at once, the trial ran twice:
    seen with two tuners starting together on PostgreSQL); a trial still nameless and silent
    after ``CAUCE_LOST_AFTER`` lost its tuner in between, and is failed and queued again."""
    import time

    import optuna

    from cauce.history import HistoryStore
    from cauce.tune._owner import TunerId
    from cauce.tune._recovery import Recovery

    monkeypatch.setenv("CAUCE_LOST_AFTER", "1")
    url = f"sqlite:///{tmp_path / 'history.db'}"
    store = HistoryStore(url)
    try:
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(study_name="shared", storage=storage)
        asked = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
        recovery = Recovery(study, storage, store, TunerId.mine())
        assert recovery.recover(mine=set()) == []
        time.sleep(0.5)
        assert recovery.recover(mine=set()) == []
        time.sleep(0.7)
        assert recovery.recover(mine=set()) == [asked.number]
        trials = study.get_trials(deepcopy=False)
        assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
        assert trials[1].system_attrs["fixed_params"] == asked.params  # queued again
    finally:
        store.close()
