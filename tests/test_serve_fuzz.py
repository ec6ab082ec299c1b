"""Schema-driven fuzzing of a live `cauce serve`: no request may get a 5xx or hurt the server.

Hypothesis builds requests from the Open Inference Protocol's request schema and the model's
metadata (names, datatypes and shapes, near-misses of each) and from the raw-record schema (the
model's features with values of every JSON kind), plus raw bytes and odd headers, and sends
them with httpx. Bounded: a fixed number of examples and a time budget of 45 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_serve_support import ServerProcess, make_models

pytest.importorskip("uvicorn")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = [pytest.mark.framework, pytest.mark.slow]

MODEL = "flights-synthetic"
FEATURES = [
    "carrier", "origin", "dest", "plane_type", "plane_manufacturer", "plane_engine",
    "month", "hour", "sched_dep_min", "distance", "plane_age", "wx_temp", "wx_wind_speed",
    "wx_precip", "wx_visib",
]  # fmt: skip
BUDGET_S = 45.0

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
names = st.sampled_from(["categorical", "numeric", "probability", "x", ""]) | st.text(max_size=6)
datatypes = st.sampled_from(["INT64", "FP32", "FP64", "INT32", "BOOL", "BYTES", "UINT64", "fp32"])
dims = st.integers(min_value=-2, max_value=12) | st.sampled_from([2**31, 2**62])
shapes = st.lists(dims, max_size=4) | st.sampled_from([[1, 6], [1, 9], [2, 6], [2, 9], [0, 6]])
numbers = st.integers(min_value=-5, max_value=30) | st.floats(-1e6, 1e6, allow_nan=False)
data = (
    st.lists(numbers, max_size=40)
    | st.lists(st.lists(numbers, max_size=9), max_size=3)
    | json_values
)


@st.composite
def infer_inputs(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"name": draw(names), "datatype": draw(datatypes), "shape": draw(shapes)}
    if draw(st.booleans()):
        item["data"] = draw(data)
    if draw(st.integers(0, 4)) == 0:
        item["parameters"] = draw(
            st.dictionaries(st.sampled_from(["binary_data_size", "x"]), json_values, max_size=2)
        )
    if draw(st.integers(0, 6)) == 0:
        item[draw(st.text(max_size=5))] = draw(json_values)
    return item


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    doc: dict[str, Any] = {"inputs": draw(st.lists(infer_inputs(), max_size=3))}
    if draw(st.booleans()):
        doc["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries({"name": names}, optional={"parameters": json_values}),
                max_size=2,
            )
        )
    if draw(st.integers(0, 4)) == 0:
        doc["parameters"] = draw(st.dictionaries(st.just("binary_data_output"), json_values))
    if draw(st.integers(0, 5)) == 0:
        doc["id"] = draw(json_values)
    body = json.dumps(doc).encode()
    headers: dict[str, str] = {}
    if draw(st.integers(0, 3)) == 0:
        body += draw(st.binary(max_size=64))
        headers["inference-header-content-length"] = draw(
            st.sampled_from([str(len(json.dumps(doc))), "0", "-1", "abc", "99999999"])
        )
    return body, headers


@st.composite
def record_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    records = []
    for _ in range(draw(st.integers(0, 3))):
        keys = draw(st.lists(st.sampled_from(FEATURES), unique=True, min_size=len(FEATURES) - 1))
        records.append({k: draw(json_values) for k in keys})
    body: Any = records if draw(st.booleans()) else {"records": records}
    if draw(st.integers(0, 5)) == 0:
        body = draw(json_values)
    return json.dumps(body).encode(), {}


garbage = st.tuples(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["content-encoding", "inference-header-content-length", "content-type"]),
        st.sampled_from(["gzip", "deflate", "br", "12", "x", "application/json"]),
        max_size=2,
    ),
)
paths = st.sampled_from(
    [f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/predict",
     f"/v2/models/{MODEL}/versions/1/infer", f"/v2/models/{MODEL}/versions/x/infer",
     "/v2/models/other/infer", f"/v2/models/{MODEL}", "/v2", "/metrics", "/v2/health/ready"]
)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    models: dict[str, Path] = make_models(tmp_path_factory.mktemp("models"))
    with ServerProcess(models["flights"], "--max-body-bytes", "65536") as proc:
        yield proc


def test_no_request_gets_a_5xx(server: ServerProcess) -> None:
    client = httpx.Client(base_url=server.url, timeout=30)
    started = time.monotonic()
    seen: dict[int, int] = {}

    @settings(
        max_examples=600,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(
        request=st.one_of(infer_bodies(), record_bodies(), garbage),
        path=paths,
        method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    )
    def check(request: tuple[bytes, dict[str, str]], path: str, method: str) -> None:
        if time.monotonic() - started > BUDGET_S:
            return
        body, headers = request
        if "predict" in path and "inference-header-content-length" in headers:
            path = path.replace("predict", "infer")
        r = client.request(method, path, content=body, headers=headers)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (method, path, headers, body[:300], r.text)
        if r.status_code >= 400:
            assert r.json()["error"], r.text

    try:
        check()
    finally:
        client.close()
    assert time.monotonic() - started < 60
    assert seen.get(200, 0) > 0 and sum(v for k, v in seen.items() if 400 <= k < 500) > 100, seen
    assert server.proc.poll() is None
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert "Traceback" not in server.log, server.log
