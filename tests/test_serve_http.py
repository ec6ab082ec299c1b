"""`cauce serve` answered by real clients: tritonclient (Open Inference Protocol) and httpx.

One server on the synthetic flights model serves the whole module; its answers must agree with
the model's offline predictions, and every bad request must get a 4xx that names the problem.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from test_serve_support import ServerProcess, make_models

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.framework

MODEL = "flights-synthetic"
_MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(models: dict[str, Path]) -> Iterator[ServerProcess]:
    with ServerProcess(models["flights"], "--max-body-bytes", str(_MAX_BODY)) as proc:
        yield proc
    assert proc.proc.returncode in (0, -15), proc.log


@pytest.fixture(scope="module")
def offline(models: dict[str, Path]) -> Any:
    from cauce.serve import load_model

    return load_model(models["flights"])


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _records(n: int, seed: int = 1) -> list[dict[str, Any]]:
    from cauce.serve._synthetic import synthetic_records

    return synthetic_records(n, seed=seed, unknown=0.2)


def test_tritonclient_metadata_ready_and_infer(server: ServerProcess, offline: Any) -> None:
    tc = pytest.importorskip("tritonclient.http")
    client = tc.InferenceServerClient(url=server.hostport)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, model_version="1")
        meta = client.get_model_metadata(MODEL)
        assert meta["name"] == MODEL
        assert meta["inputs"] == [
            {"name": "categorical", "datatype": "INT64", "shape": [-1, 6]},
            {"name": "numeric", "datatype": "FP32", "shape": [-1, 9]},
        ]
        assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]}]
        assert client.get_server_metadata()["name"] == "cauce"

        arrays = offline.preprocess(_records(7))
        expected = offline.predict(arrays)["probability"]
        for binary in (True, False):  # the binary tensor extension, then plain JSON
            inputs = []
            for name, datatype in (("categorical", "INT64"), ("numeric", "FP32")):
                item = tc.InferInput(name, list(arrays[name].shape), datatype)
                item.set_data_from_numpy(arrays[name], binary_data=binary)
                inputs.append(item)
            outputs = [tc.InferRequestedOutput("probability", binary_data=binary)]
            result = client.infer(MODEL, inputs, outputs=outputs, request_id="r1")
            got = result.as_numpy("probability")
            assert got.dtype == np.float32 and got.shape == (7,)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
            assert result.get_response()["id"] == "r1"
    finally:
        client.close()


def test_raw_records_agree_with_offline(client: httpx.Client, offline: Any) -> None:
    records = _records(25, seed=3)
    expected = offline.predict(offline.preprocess(records))["probability"]
    for body in (records, {"records": records}):
        r = client.post(f"/v2/models/{MODEL}/predict", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_name"] == MODEL
        np.testing.assert_allclose(doc["outputs"]["probability"], expected, rtol=1e-5, atol=1e-6)


def test_unknown_category_is_code_zero(client: httpx.Client, offline: Any) -> None:
    record = _records(1, seed=4)[0]
    unknown = {**record, "carrier": "NOT-A-CARRIER", "dest": None}
    coded = offline.preprocess([unknown])
    assert coded["categorical"][0, 0] == 0 and coded["categorical"][0, 2] == 0
    r = client.post(f"/v2/models/{MODEL}/predict", json=[unknown])
    assert r.status_code == 200, r.text
    expected = offline.predict(coded)["probability"]
    np.testing.assert_allclose(r.json()["outputs"]["probability"], expected, rtol=1e-5)


def _infer_body(cats: Any, nums: Any, **changes: Any) -> dict[str, Any]:
    cat_item = {"name": "categorical", "datatype": "INT64", "shape": [1, 6], "data": cats}
    num_item = {"name": "numeric", "datatype": "FP32", "shape": [1, 9], "data": nums}
    cat_item.update(changes.pop("cat", {}))
    num_item.update(changes.pop("num", {}))
    return {"inputs": [cat_item, num_item], **changes}


GOOD_CAT = [1, 2, 3, 1, 1, 1]
GOOD_NUM = [0.0] * 9

BAD_INFER = [
    ("wrong shape", _infer_body(GOOD_CAT, GOOD_NUM, num={"shape": [1, 8]}), "shape"),
    ("data size", _infer_body(GOOD_CAT, [0.0] * 8), "needs 9"),
    ("wrong dtype", _infer_body(GOOD_CAT, GOOD_NUM, cat={"datatype": "FP32"}), "INT64"),
    ("floats as ints", _infer_body([1.5, 2, 3, 1, 1, 1], GOOD_NUM), "non-integers"),
    ("strings", _infer_body(GOOD_CAT, ["a"] * 9), "strings"),
    ("ragged", _infer_body(GOOD_CAT, GOOD_NUM, num={"shape": [1, 9], "data": [[1], [1, 2]]}), ""),
    ("code too big", _infer_body([1, 2, 999, 1, 1, 1], GOOD_NUM), "dest"),
    ("negative code", _infer_body([-1, 2, 3, 1, 1, 1], GOOD_NUM), "carrier"),
    ("missing input", {"inputs": [_infer_body(GOOD_CAT, GOOD_NUM)["inputs"][0]]}, "numeric"),
    ("unknown input", _infer_body(GOOD_CAT, GOOD_NUM, cat={"name": "cats"}), "cats"),
    (  # a raw feature sent as a tensor: sent to /predict
        "raw feature",
        {"inputs": [{"name": "carrier", "datatype": "BYTES", "shape": [1], "data": ["UA"]}]},
        f"unknown input 'carrier'; the model takes ['categorical', 'numeric']; 'carrier' is a raw "
        f"feature: send raw records to POST /v2/models/{MODEL}/predict",
    ),
    ("unknown output", _infer_body(GOOD_CAT, GOOD_NUM, outputs=[{"name": "p"}]), "'p'"),
    ("no inputs", {"inputs": []}, "inputs"),
    ("not an object", [1, 2, 3], "object"),
    ("empty batch", _infer_body([], [], cat={"shape": [0, 6]}, num={"shape": [0, 9]}), "empty"),
    ("booleans as ints", _infer_body([True] * 6, GOOD_NUM), "booleans"),
    ("a boolean among ints", _infer_body([1, 2, True, 1, 1, 1], GOOD_NUM), "booleans"),
    ("booleans as floats", _infer_body(GOOD_CAT, [False] * 9), "booleans"),
    ("a nested boolean", _infer_body(GOOD_CAT, [[0.5] * 8 + [True]]), "booleans"),
    ("FP32 overflow", _infer_body(GOOD_CAT, [1e39] + [0.0] * 8), "out of range for FP32"),
    ("FP32 overflow, int", _infer_body(GOOD_CAT, [10**39] + [0] * 8), "out of range for FP32"),
    ("int beyond INT64", _infer_body([2**64, 2, 3, 1, 1, 1], GOOD_NUM), "non-integers"),
    ("model_name", _infer_body(GOOD_CAT, GOOD_NUM, model_name="x"), "does not match"),
]


@pytest.mark.parametrize(("case", "body", "says"), BAD_INFER, ids=[c[0] for c in BAD_INFER])
def test_bad_infer_requests_get_400(client: httpx.Client, case: str, body: Any, says: str) -> None:
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert says in r.json()["error"], r.json()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"inputs": [', 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        (b"", 400, "malformed JSON"),
    ],
)
def test_malformed_json(client: httpx.Client, body: bytes, status: int, says: str) -> None:
    for endpoint in ("infer", "predict"):
        r = client.post(f"/v2/models/{MODEL}/{endpoint}", content=body)
        assert r.status_code == status and says in r.json()["error"], r.text


def test_binary_flags_are_not_booleans_in_the_data(client: httpx.Client) -> None:
    """JSON true in parameters (binary_data) is not data: the request is served."""
    body = _infer_body(GOOD_CAT, GOOD_NUM, outputs=[{"name": "probability"}])
    body["outputs"][0]["parameters"] = {"binary_data": False}
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 200, r.text


def test_a_record_that_overflows_fp32_is_400(client: httpx.Client) -> None:
    record = {**_records(1, seed=6)[0], "distance": 1e300}
    r = client.post(f"/v2/models/{MODEL}/predict", json=[record])
    assert r.status_code == 400, r.text
    assert "'distance'" in r.json()["error"] and "FP32" in r.json()["error"]


def test_bad_records_name_the_feature(client: httpx.Client) -> None:
    record = _records(2, seed=5)
    del record[1]["distance"]
    r = client.post(f"/v2/models/{MODEL}/predict", json=record)
    assert r.status_code == 400
    assert r.json()["error"] == "record 1: feature 'distance' is missing"
    bad = [{**record[0], "wx_temp": "warm"}]
    r = client.post(f"/v2/models/{MODEL}/predict", json=bad)
    assert r.status_code == 400 and "'wx_temp' must be a number" in r.json()["error"]
    bad = [{**record[0], "carrier": ["UA"]}]
    r = client.post(f"/v2/models/{MODEL}/predict", json=bad)
    assert r.status_code == 400 and "'carrier' must be a string" in r.json()["error"]
    for body in ([], {"rows": []}, "x", [1]):
        r = client.post(f"/v2/models/{MODEL}/predict", json=body)
        assert r.status_code == 400, r.text


def test_raw_schema_missing_and_unknown_fields(client: httpx.Client, offline: Any) -> None:
    """GET .../predict lists the raw fields with types and nullability; a record that lacks
    several gets one 400 naming them all; unknown fields are ignored and named in a header."""
    r = client.get(f"/v2/models/{MODEL}/predict")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["name"], doc["unknown_fields"]) == (MODEL, "ignored")
    fields = {f["name"]: f for f in doc["fields"]}
    record = _records(1, seed=7)[0]
    assert set(fields) == set(record)
    assert fields["carrier"]["kind"] == "categorical" and fields["carrier"]["type"] == "string"
    assert fields["distance"]["type"] == "number"
    assert all(f["nullable"] and f["required"] for f in fields.values())
    # Every field may be null, as the schema says.
    r = client.post(f"/v2/models/{MODEL}/predict", json=[dict.fromkeys(record)])
    assert r.status_code == 200, r.text
    lacking = {k: v for k, v in record.items() if k not in ("carrier", "distance", "wx_temp")}
    r = client.post(f"/v2/models/{MODEL}/predict", json=[record, lacking])
    assert r.status_code == 400
    assert r.json()["error"] == "record 1: features 'carrier', 'distance', 'wx_temp' are missing"
    extra = {**record, "arr_delay": 12, "tail\nnum": "N1"}
    r = client.post(f"/v2/models/{MODEL}/predict", json=[extra])
    assert r.status_code == 200, r.text
    assert r.headers["cauce-ignored-fields"] == "arr_delay, and 1 more"
    assert (
        "cauce-ignored-fields"
        not in client.post(f"/v2/models/{MODEL}/predict", json=[record]).headers
    )


def test_oversized_body_is_413(client: httpx.Client) -> None:
    big = b"[" + b"0," * (_MAX_BODY // 2) + b"0]"
    r = client.post(f"/v2/models/{MODEL}/infer", content=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    bomb = gzip.compress(big)
    r = client.post(f"/v2/models/{MODEL}/infer", content=bomb, headers={"content-encoding": "gzip"})
    assert r.status_code == 413, r.text


def test_gzip_body_is_read(client: httpx.Client) -> None:
    body = gzip.compress(json.dumps(_infer_body(GOOD_CAT, GOOD_NUM)).encode())
    r = client.post(f"/v2/models/{MODEL}/infer", content=body, headers={"content-encoding": "gzip"})
    assert r.status_code == 200, r.text


def test_routes_and_methods(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2").json()["name"] == "cauce"
    r = client.get("/v2/models/other")
    assert r.status_code == 404 and "unknown model 'other'" in r.json()["error"]
    assert client.get(f"/v2/models/{MODEL}/versions/7/ready").status_code == 404
    assert client.get(f"/v2/models/{MODEL}/versions/1").status_code == 200
    r = client.get(f"/v2/models/{MODEL}/infer")
    assert r.status_code == 405 and "POST" in r.json()["error"]
    assert client.post("/v2/health/ready").status_code == 405
    assert client.get("/nope").status_code == 404


def test_binary_extension_errors(client: httpx.Client) -> None:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "categorical",
                    "datatype": "INT64",
                    "shape": [1, 6],
                    "parameters": {"binary_data_size": 48},
                },
                {
                    "name": "numeric",
                    "datatype": "FP32",
                    "shape": [1, 9],
                    "parameters": {"binary_data_size": 36},
                },
            ]
        }
    ).encode()
    blob = np.ones((1, 6), np.int64).tobytes() + np.zeros((1, 9), np.float32).tobytes()
    url = f"/v2/models/{MODEL}/infer"
    ok = client.post(
        url, content=head + blob, headers={"inference-header-content-length": str(len(head))}
    )
    assert ok.status_code == 200, ok.text
    for length, tail, says in [
        (len(head), blob[:-4], "ends before"),
        (len(head), blob + b"xx", "after the last input"),
        (len(head) + 999, blob, "Inference-Header-Content-Length"),
        (3, blob, "malformed JSON"),
    ]:
        r = client.post(
            url, content=head + tail, headers={"inference-header-content-length": str(length)}
        )
        assert r.status_code == 400 and says in r.json()["error"], r.text


def test_metrics_count_requests_batches_and_errors(client: httpx.Client) -> None:
    client.post(f"/v2/models/{MODEL}/infer", json=_infer_body(GOOD_CAT, GOOD_NUM))
    client.post(f"/v2/models/{MODEL}/infer", content=b"{")
    text = client.get("/metrics").text
    assert f'cauce_serve_requests_total{{code="200",endpoint="infer",model="{MODEL}"}}' in text
    assert f'cauce_serve_requests_total{{code="400",endpoint="infer",model="{MODEL}"}}' in text
    for name in (
        "cauce_serve_request_duration_seconds_bucket",
        "cauce_serve_batch_size_bucket",
        "cauce_serve_queue_depth",
        "cauce_serve_errors_total",
        "cauce_serve_inference_duration_seconds_bucket",
    ):
        assert name in text, name


def test_server_survived_everything(server: ServerProcess, client: httpx.Client) -> None:
    """After every bad request above: the same process, still ready, no 5xx in its log."""
    assert server.proc.poll() is None
    assert client.get("/v2/health/ready").status_code == 200
    text = client.get("/metrics").text
    assert not re.search(r'code="5(?!03",endpoint="ready")', text), text
    assert "Traceback" not in server.log
