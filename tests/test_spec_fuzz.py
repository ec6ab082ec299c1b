"""Every spec loader, fed generated YAML and values: a valid spec, or a SpecError in one line.

Never another exception, never a traceback; bounded in examples and time.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cauce.cluster._config import load_local_config
from cauce.errors import SpecError, SpecErrors
from cauce.pipeline import load_pipeline
from cauce.spec import load_job, parse_job, parse_tune

_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_JOB_KEYS = ["name", "framework", "command", "roles", "env", "workdir", "restart", "timeout",
             "hang_timeout", "grace_period", "cluster", "tune", "spark",
             "tensorboard"]  # fmt: skip
_NESTED_KEYS = ["worker", "ps", "chief", "instances", "resources", "cpus", "memory", "gpus",
                "max_restarts", "backoff", "max_backoff", "objective", "metric", "direction",
                "space", "type", "low", "high", "step", "log", "values", "sampler", "pruner",
                "seed", "trials", "local", "steps", "job", "inputs", "outputs", "X",
                "logdir", "report"]  # fmt: skip

_WORDS = ["uniform", "int", "choice", "loguniform", "grid", "tpe", "min", "max", "pytorch",
          "tensorflow", "mxnet", "local", "spark://", "spark://h:x", "spark://h:7077", "local[2]",
          "4GiB", "1e400GiB", "true", "a\0b", "x" * 300, "python t.py",
          "${steps.a.outputs.b}"]  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**8, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(_WORDS),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(_NESTED_KEYS), st.text(max_size=8)), children, max_size=4
        ),
    ),
    max_leaves=25,
)
_jobs = st.dictionaries(st.sampled_from(_JOB_KEYS), _values, max_size=8)
_yaml_chars = st.sampled_from([*"ab01 :-[]{},&*!|>'\"#?%@`\n\t.", "\\0", "\0", "é", "\x85"])
_raw_texts = st.one_of(
    st.lists(_yaml_chars, max_size=80).map("".join),
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
)


def _dump(value: object) -> str:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)


def _documents() -> st.SearchStrategy[str]:
    """YAML text: dumped generated values (valid YAML, odd content) or raw characters."""
    dumped = st.one_of(_jobs, _values).map(_dump)
    anchored = st.tuples(_values, st.integers(1, 12)).map(
        lambda vn: (
            "base: &a " + _dump(vn[0]).replace("\n", " ") + "\n"
            if "\n" not in _dump(vn[0]).strip()
            else "x: " + "[" * vn[1] + "*a" + "]" * vn[1]
        )
    )
    return st.one_of(dumped, _raw_texts, anchored)


def _one_line_or_valid(call: Callable[[], object]) -> None:
    try:
        call()
    except SpecError as exc:
        # one line per mistake (every mistake of a file at once), each of a readable length
        lines = str(exc).split("\n")
        assert all(line and len(line) <= 2000 for line in lines), str(exc)
        assert len(lines) <= SpecErrors.MAX_SHOWN + 1, str(exc)
        assert exc.exit_code == 2


@pytest.mark.timeout(280)
@_SETTINGS
@given(text=_documents())
def test_yaml_text_into_every_file_loader(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "job.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        (root / "config.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        _one_line_or_valid(lambda: load_job(root / "job.yaml"))
        _one_line_or_valid(lambda: load_local_config(root))
        # A pipeline file needs steps; give it the generated document as its steps too.
        (root / "pipeline.yaml").write_text(
            "steps:\n" + "".join(f"  {line}\n" for line in text.splitlines()),
            encoding="utf-8",
            errors="surrogatepass",
        )
        _one_line_or_valid(lambda: load_pipeline(root / "job.yaml"))
        _one_line_or_valid(lambda: load_pipeline(root / "pipeline.yaml"))


@pytest.mark.timeout(280)
@_SETTINGS
@given(data=_jobs, tune=_values)
def test_values_into_job_and_tune_parsers(data: dict[str, object], tune: object) -> None:
    _one_line_or_valid(lambda: parse_job(data, source="job.yaml"))
    _one_line_or_valid(lambda: parse_job({"command": "true", **data}, source="job.yaml"))
    _one_line_or_valid(lambda: parse_tune(tune, source="job.yaml"))


_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, 1, 10**4000]),
)


@pytest.mark.timeout(280)
@_SETTINGS
@given(
    field=st.sampled_from(["timeout", "hang_timeout", "grace_period", "backoff", "max_backoff",
                           "cpus", "memory", "gpus", "instances", "low", "high", "step"]),
    number=_numbers,
)  # fmt: skip
def test_every_numeric_field_is_finite_and_bounded(field: str, number: float) -> None:
    job: dict[str, object] = {"name": "t", "command": "true"}
    if field in ("backoff", "max_backoff"):
        job["restart"] = {field: number}
    elif field in ("cpus", "memory", "gpus"):
        job["roles"] = {"worker": {"resources": {field: number}}}
    elif field == "instances":
        job["roles"] = {"worker": {"instances": number}}
    elif field in ("low", "high", "step"):
        param: dict[str, object] = {"type": "uniform", "low": 0.0, "high": 1.0, field: number}
        job["tune"] = {"objective": {"metric": "m"}, "space": {"x": param}}
        job["tune"]["objective"]["direction"] = "min"  # type: ignore[index]
    else:
        job[field] = number
    try:
        spec = parse_job(job, source="job.yaml")
    except SpecError as exc:
        assert "\n" not in str(exc)
        return
    # Accepted: then it is a number a job can live with.
    values = [spec.timeout, spec.hang_timeout, spec.grace_period, spec.restart.backoff,
              spec.restart.max_backoff, spec.roles[0].resources.cpus,
              spec.roles[0].resources.memory, spec.roles[0].resources.gpus,
              spec.roles[0].instances]  # fmt: skip
    if spec.tune is not None:
        values += [spec.tune.space[0].low, spec.tune.space[0].high, spec.tune.space[0].step]
    for value in values:
        if value is not None:
            assert math.isfinite(value) and abs(value) <= 2**60, (field, number, value)
