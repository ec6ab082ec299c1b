"""`cauce package`: the Dockerfile and Kubernetes manifests, checked against the API's schemas.

The manifests are validated with kubernetes-validate (the Kubernetes OpenAPI schemas as JSON
schemas, strict: an unknown field is an error). `docker build` cannot run here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import cauce
from test_serve_support import make_models

kv = pytest.importorskip("kubernetes_validate")
pytestmark = pytest.mark.framework

K8S_VERSION = "1.30.0"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))["flights"]


def _load(folder: Path) -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((folder / "k8s").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        kv.validate(doc, K8S_VERSION, strict=True)
        docs[doc["kind"]] = doc
    return docs


def test_cpu_package_is_valid(model: Path, tmp_path: Path) -> None:
    from cauce.serve import package

    written = package(model, tmp_path / "out", replicas=2, max_replicas=5)
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == [
        ".dockerignore",
        "Dockerfile",
        "k8s/deployment.yaml",
        "k8s/hpa.yaml",
        "k8s/service.yaml",
        "wheels/cauce-0.1.0-py3-none-any.whl",  # the tests run cauce from its checkout
    ]
    assert (tmp_path / "out/model/cauce-model.json").is_file()
    docs = _load(tmp_path / "out")
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"]["cpu"] == "1"
    assert container["resources"]["requests"]["memory"].endswith("Mi")
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert docs["Deployment"]["spec"]["replicas"] == 2
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    service = docs["Service"]["spec"]
    assert service["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    dockerfile = (tmp_path / "out/Dockerfile").read_text()
    assert 'ENTRYPOINT ["cauce", "serve", "/models/flights-synthetic"]' in dockerfile
    assert "COPY --chown=10001 model/ /models/flights-synthetic/" in dockerfile
    assert "CAUCE_SERVE_HOST=0.0.0.0" in dockerfile


def test_package_from_a_checkout_installs_its_wheel(
    model: Path, tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """cauce runs from this checkout (no index has its version): the image installs a wheel of
    it, copied into the build context; the manifests have no YAML anchors."""
    import zipfile

    done = cauce(["package", str(model), "--out", str(tmp_path / "o")], cauce_env, timeout=120)
    assert done.returncode == 0, done.stderr
    wheels = sorted((tmp_path / "o/wheels").glob("*.whl"))
    assert [w.name for w in wheels] == ["cauce-0.1.0-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    assert "cauce/serve/_package.py" in names and "cauce/cli/main.py" in names
    dockerfile = (tmp_path / "o/Dockerfile").read_text()
    assert f"COPY wheels/{wheels[0].name} /tmp/wheels/{wheels[0].name}" in dockerfile
    assert f'pip install "/tmp/wheels/{wheels[0].name}[serve]"' in dockerfile
    assert "cauce[serve]==" not in dockerfile
    assert "!wheels/" in (tmp_path / "o/.dockerignore").read_text().splitlines()
    for path in (tmp_path / "o/k8s").glob("*.yaml"):
        text = path.read_text()
        assert "&id" not in text and "*id" not in text, text
    # With a requirement given, no wheel: the image installs what was asked for.
    args = ["package", str(model), "--out", str(tmp_path / "o"), "--cauce-requirement", "cauce"]
    assert cauce(args, cauce_env, timeout=60).returncode == 0
    assert not (tmp_path / "o/wheels").exists()
    assert 'ARG CAUCE_REQUIREMENT="cauce"' in (tmp_path / "o/Dockerfile").read_text()


def test_cuda_package_asks_for_gpus(model: Path, tmp_path: Path) -> None:
    from cauce.serve import package

    package(model, tmp_path / "out", device="cuda", gpus=2, memory="6Gi", namespace="ml")
    docs = _load(tmp_path / "out")
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["memory"] == "6Gi"
    assert {"name": "CAUCE_SERVE_DEVICE", "value": "cuda"} in container["env"]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs.values())


def test_an_invalid_manifest_is_caught(model: Path, tmp_path: Path) -> None:
    """The check has teeth: a misspelt field fails it."""
    from cauce.serve import package

    package(model, tmp_path / "out")
    path = tmp_path / "out/k8s/deployment.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, K8S_VERSION, strict=True)


def test_cli_package(model: Path, tmp_path: Path, cauce_env: dict[str, str]) -> None:
    env = {**cauce_env, "CAUCE_PACKAGE_IMAGE": "registry.example/flights:1"}
    done = cauce(
        [
            "package",
            str(model),
            "--out",
            str(tmp_path / "o"),
            "--replicas",
            "3",
            "--max-replicas",
            "2",
        ],
        env,
        timeout=60,
    )
    assert done.returncode == 2 and "replicas <= max_replicas" in done.stderr
    done = cauce(["package", str(model), "--out", str(tmp_path / "o")], env, timeout=60)
    assert done.returncode == 0, done.stderr
    docs = _load(tmp_path / "o")
    image = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/flights:1"


def _server_env(folder: Path) -> list[dict[str, Any]]:
    docs = _load(folder)
    env: list[dict[str, Any]] = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    return env


def test_the_token_comes_from_a_secret(model: Path, tmp_path: Path) -> None:
    """The server listens on 0.0.0.0, so it needs a token: a reference to a Secret's key,
    never a value, in a manifest that the Kubernetes schemas accept."""
    from cauce.serve import package

    package(model, tmp_path / "default")
    ref = {"secretKeyRef": {"name": "cauce-flights-synthetic-token", "key": "token"}}
    assert {"name": "CAUCE_SERVE_TOKEN", "valueFrom": ref} in _server_env(tmp_path / "default")
    package(model, tmp_path / "named", token_secret="flights-token")
    (token,) = [e for e in _server_env(tmp_path / "named") if e["name"] == "CAUCE_SERVE_TOKEN"]
    assert token == {
        "name": "CAUCE_SERVE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "flights-token", "key": "token"}},
    }
    package(model, tmp_path / "open", insecure=True)
    env = _server_env(tmp_path / "open")
    assert {"name": "CAUCE_SERVE_INSECURE", "value": "1"} in env
    assert not any(e["name"] == "CAUCE_SERVE_TOKEN" for e in env)


def test_cli_package_token_secret(model: Path, tmp_path: Path, cauce_env: dict[str, str]) -> None:
    env = {**cauce_env, "CAUCE_PACKAGE_TOKEN_SECRET": "from-env"}
    done = cauce(["package", str(model), "--out", str(tmp_path / "o")], env, timeout=60)
    assert done.returncode == 0, done.stderr
    ref = {"secretKeyRef": {"name": "from-env", "key": "token"}}
    assert {"name": "CAUCE_SERVE_TOKEN", "valueFrom": ref} in _server_env(tmp_path / "o")
    done = cauce(
        ["package", str(model), "--out", str(tmp_path / "p"), "--insecure"], env, timeout=60
    )
    assert done.returncode == 2 and "exclude each other" in done.stderr, done.stderr
    bad = ["package", str(model), "--out", str(tmp_path / "q"), "--token-secret", "Not_A_Name"]
    done = cauce(bad, cauce_env, timeout=60)
    assert done.returncode == 2 and "must be a Kubernetes name" in done.stderr, done.stderr


# --- KServe -------------------------------------------------------------------------------------

#: The InferenceService CRD's OpenAPI schema, vendored (source, version and pruning in its
#: "$comment": kserve/kserve v0.16.0).
KSERVE_SCHEMA = Path(__file__).parent / "data" / "kserve" / "inferenceservice-v1beta1.schema.json"


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as ``kubectl apply --validate=strict`` does:
    ``additionalProperties: false`` wherever properties are listed and unknown fields are not
    preserved."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def isvc_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(KSERVE_SCHEMA.read_text())
    assert "kserve/kserve at tag v0.16.0" in schema["$comment"]
    return jsonschema.Draft7Validator(_strict(schema))


def test_kserve_inference_service_is_valid(
    model: Path, tmp_path: Path, isvc_validator: Any
) -> None:
    from cauce.serve import package

    written = package(model, tmp_path / "out", kserve=True, replicas=2, namespace="ml")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == [
        ".dockerignore",
        "Dockerfile",
        "k8s/inferenceservice.yaml",
        "wheels/cauce-0.1.0-py3-none-any.whl",
    ]
    doc = yaml.safe_load((tmp_path / "out/k8s/inferenceservice.yaml").read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in isvc_validator.iter_errors(doc)]
    assert errors == []
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert doc["metadata"]["namespace"] == "ml"
    assert doc["metadata"]["annotations"]["model.cauce.dev/name"] == "flights-synthetic"
    predictor = doc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 4)
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "cauce-flights-synthetic:" + str(
        doc["metadata"]["annotations"]["model.cauce.dev/version"]
    )
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]  # Open Inference Protocol
    ref = {"secretKeyRef": {"name": "cauce-flights-synthetic-token", "key": "token"}}
    assert {"name": "CAUCE_SERVE_TOKEN", "valueFrom": ref} in container["env"]
    port = container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    assert container["resources"]["requests"]["cpu"] == "1"
    assert container["resources"]["limits"]["memory"].endswith("Mi")


def test_kserve_cuda_and_cli(
    model: Path, tmp_path: Path, cauce_env: dict[str, str], isvc_validator: Any
) -> None:
    env = {**cauce_env, "CAUCE_PACKAGE_IMAGE": "registry.example/flights:1"}
    # A package of the other kind in the same folder is replaced, not mixed in.
    done = cauce(["package", str(model), "--out", str(tmp_path / "o")], env, timeout=60)
    assert done.returncode == 0, done.stderr
    args = ["package", str(model), "--out", str(tmp_path / "o"), "--kserve", "--device", "cuda"]
    done = cauce(args, env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "o/k8s").iterdir()) == ["inferenceservice.yaml"]
    doc = yaml.safe_load((tmp_path / "o/k8s/inferenceservice.yaml").read_text())
    isvc_validator.validate(doc)
    [container] = doc["spec"]["predictor"]["containers"]
    assert container["image"] == "registry.example/flights:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_a_broken_inference_service_does_not_validate(
    model: Path, tmp_path: Path, isvc_validator: Any
) -> None:
    from cauce.serve import package

    package(model, tmp_path / "out", kserve=True)
    doc = yaml.safe_load((tmp_path / "out/k8s/inferenceservice.yaml").read_text())
    without = {**doc, "spec": {}}
    assert [e.message for e in isvc_validator.iter_errors(without)] == [
        "'predictor' is a required property"
    ]
    misspelt = json.loads(json.dumps(doc))
    misspelt["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    assert not isvc_validator.is_valid(misspelt)
