"""Refusals of `cauce serve`, `predict` and `package` that an outside tester found as tracebacks,
late failures or silent defaults: each is one line `error: ...`, with its exit code."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from helpers import cauce
from test_serve_security import _self_signed
from test_serve_support import make_models, serve_env

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.framework


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))["flights"]


def _refused(done: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    stderr = done.stderr
    assert done.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert says in stderr, stderr


@pytest.mark.slow
def test_a_model_uri_that_cannot_be_used(cauce_env: dict[str, str]) -> None:
    env = serve_env(cauce_env)
    # no credentials from anywhere (and no instance metadata server asked)
    env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent")
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
    cases = [
        (
            ["serve", "ftp2://x/y", "--port", "0"],
            {},
            2,
            "ftp2://x/y: Protocol not known: ftp2; give a local",
        ),
        (["predict", "ftp2://x/y", "--input", "i", "--output", "o"], {}, 2, "Protocol not known"),
        (
            ["serve", "s3://nobucket/x", "--port", "0"],
            {},
            1,
            "s3://nobucket/x: cannot be read: NoCredentials",
        ),
        (
            ["serve", "models:/tiny/1", "--port", "0"],
            {"MLFLOW_TRACKING_URI": "foo://bar"},
            2,
            "models:/tiny/1: MLflow has no model registry at 'foo://bar'",
        ),
    ]
    if importlib.util.find_spec("gcsfs") is None:
        cases.append((["serve", "gs://nobucket/x", "--port", "0"], {}, 2, "install gcsfs"))
    for args, extra, code, says in cases:
        _refused(cauce(args, {**env, **extra}, timeout=120), code, says)


@pytest.mark.slow
def test_serve_settings_refused_at_start(
    model: Path, tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    cert, key = _self_signed(tmp_path)
    from cryptography.hazmat.primitives import serialization

    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    env = serve_env(cauce_env)
    cases = [
        # an empty variable counts as unset: the next problem is the one named
        (["--ready-file", str(tmp_path)], {"CAUCE_SERVE_TOKEN": ""}, "is a folder"),
        (["--token", ""], {}, "--token is empty"),
        (["--tls-cert", str(cert), "--tls-key", str(locked)], {}, "the key is encrypted"),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], {}, "--device cuda: torch sees no CUDA device"))
    for args, extra, says in cases:
        done = cauce(["serve", str(model), "--port", "0", *args], {**env, **extra}, timeout=120)
        _refused(done, 2, says)


def test_package_options_are_checked(
    model: Path, tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    from cauce.serve import SettingsError, package

    (tmp_path / "file").write_text("")
    for args, says in [
        (["--replicas", "0"], "need 1 <= replicas <= max_replicas"),
        (["--memory", "4GB"], "--memory '4GB' is not valid: give one like 2Gi"),
        (["--out", str(tmp_path / "file")], "is a file: give a folder"),
    ]:
        out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
        _refused(cauce(["package", str(model), *out, *args], cauce_env, timeout=60), 2, says)
    for options, says in [
        ({"port": 70000}, "port must be between 1 and 65535"),
        ({"device": "cuda", "gpus": 0}, "gpus must be >= 1"),
        ({"cpu": "abc"}, "--cpu 'abc'"),
        ({"cpu": "-1"}, "--cpu '-1'"),
        ({"memory": "-4Gi"}, "--memory '-4Gi'"),
        ({"image": "Bad Image!!"}, "--image 'Bad Image!!'"),
        ({"namespace": "Bad_NS"}, "--namespace 'Bad_NS'"),
    ]:
        with pytest.raises(SettingsError, match=says):
            package(model, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
    written = package(
        model,
        tmp_path / "out",
        cpu="500m",
        memory="1.5Gi",
        namespace="ml-serving",
        image="localhost:5000/team/flights_x:v1.2",
    )
    assert written
