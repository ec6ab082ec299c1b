"""`cauce serve` against the protocol's other tools: KServe's Python client and schemathesis.

KServe's ``InferenceRESTClient`` sends ``model_name`` (and an ``id``) in the request body;
schemathesis generates requests from the server's own OpenAPI document (``/v2/openapi.json``)
and checks every answer against it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from test_serve_support import ServerProcess, make_models, serve_env

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.framework

MODEL = "flights-synthetic"
TOKEN = "clients-token-7"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(models: dict[str, Path]) -> Iterator[ServerProcess]:
    import os

    env = {**serve_env(os.environ), "CAUCE_SERVE_TOKEN": TOKEN}
    with ServerProcess(models["flights"], env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def offline(models: dict[str, Path]) -> Any:
    from cauce.serve import load_model

    return load_model(models["flights"])


def _arrays(offline: Any, n: int) -> dict[str, Any]:
    from cauce.serve._synthetic import synthetic_records

    return dict(offline.preprocess(synthetic_records(n, seed=5, unknown=0.1)))


def test_kserve_rest_client_infers(server: ServerProcess, offline: Any) -> None:
    kserve = pytest.importorskip("kserve")
    arrays = _arrays(offline, 5)
    expected = offline.predict(arrays)["probability"]

    async def infer() -> Any:
        client = kserve.InferenceRESTClient(config=kserve.RESTConfig(protocol="v2"))
        try:
            inputs = []
            for name, datatype in (("categorical", "INT64"), ("numeric", "FP32")):
                item = kserve.InferInput(name, list(arrays[name].shape), datatype)
                item.set_data_from_numpy(arrays[name], binary_data=False)
                inputs.append(item)
            request = kserve.InferRequest(model_name=MODEL, infer_inputs=inputs)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            return await client.infer(server.url, request, model_name=MODEL, headers=headers)
        finally:
            await client.close()

    response = asyncio.run(infer())
    assert response.model_name == MODEL
    (output,) = response.outputs
    assert output.name == "probability" and output.datatype == "FP32"
    np.testing.assert_allclose(output.as_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_body_model_name_must_match_the_url(server: ServerProcess) -> None:
    body = {
        "model_name": "another-model",
        "inputs": [
            {"name": "categorical", "datatype": "INT64", "shape": [1, 6], "data": [1] * 6},
            {"name": "numeric", "datatype": "FP32", "shape": [1, 9], "data": [0.0] * 9},
        ],
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server.url}/v2/models/{MODEL}/infer"
    r = httpx.post(url, json=body, headers=headers, timeout=30)
    assert r.status_code == 400 and "does not match" in r.json()["error"], r.text
    for extra in ({"model_name": MODEL}, {"model_name": MODEL, "model_version": "1"}):
        r = httpx.post(url, json={**body, **extra}, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
    wrong_version = {**body, "model_name": MODEL, "model_version": "7"}
    r = httpx.post(url, json=wrong_version, headers=headers, timeout=30)
    assert r.status_code == 400 and "'7'" in r.json()["error"], r.text


def test_openapi_document_is_served_without_a_token(server: ServerProcess) -> None:
    doc = httpx.get(f"{server.url}/v2/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.")
    infer = doc["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["security"] == [{"bearer": []}] and "401" in infer["responses"]
    assert doc["paths"]["/v2/health/ready"]["get"]["security"] == []


def test_schemathesis_finds_no_server_error_and_no_nonconformance(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Requests generated from the document (valid ones, near-misses, invalid ones): no 5xx,
    every status, content type, header and body as documented, invalid data rejected, the
    token enforced (``ignored_auth``), 405 with ``Allow``. Bounded: 8 examples a operation."""
    pytest.importorskip("schemathesis")
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{server.url}/v2/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "all",
        "--exclude-checks",
        # /infer cannot say in a schema that data must hold prod(shape) values, so valid-
        # looking requests may be refused (400): that check does not apply.
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "8",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--seed",
        "20261130",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    # cwd: schemathesis keeps a cache folder (.schemathesis/) where it runs
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # 14: with GET .../predict and GET .../versions/{version}/predict (the raw schema)
    assert "passed" in output and "Operations:       14 selected / 14 total" in output
