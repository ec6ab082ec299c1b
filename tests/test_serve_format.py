"""The model format: save_model / load_model, cauce-model.json checks, preprocessing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cauce.serve import (
    CategoricalFeature,
    FeatureError,
    InvalidInput,
    ModelFormatError,
    NumericFeature,
    Preprocessing,
    ServeError,
    ServeSettings,
    TensorSpec,
)
from s3_fixtures import endpoint_fixture, s3_store_fixture  # noqa: F401 - fixtures

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.framework

INPUTS = [TensorSpec("categorical", "INT64", (-1, 2)), TensorSpec("numeric", "FP32", (-1, 2))]
OUTPUTS = [TensorSpec("probability", "FP32", (-1,))]
PRE = Preprocessing(
    categorical=(
        CategoricalFeature("carrier", ("AA", "UA", "DL")),
        CategoricalFeature("flight", (101, 202)),
    ),
    numeric=(NumericFeature("distance", 1000.0, 500.0), NumericFeature("temp", 50.0, 10.0, 0.0)),
)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Embedding(4, 3)
        self.b = torch.nn.Embedding(3, 3)
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.a(categorical[:, 0]), self.b(categorical[:, 1]), numeric], dim=1)
        return torch.sigmoid(self.lin(x)).squeeze(1)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    from cauce.serve import save_model

    return save_model(
        tmp_path / "m",
        Tiny(),
        name="tiny",
        inputs=INPUTS,
        outputs=OUTPUTS,
        preprocessing=PRE,
        lineage={"run": "r1", "auc": 0.7},
    )


def _spec(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "cauce-model.json").read_text())
    return data


def test_round_trip_matches_the_module(saved: Path) -> None:
    from cauce.serve import load_model

    spec = _spec(saved)
    assert spec["framework"] == "torchscript" and spec["format_version"] == 1
    assert spec["inputs"][0] == {"name": "categorical", "datatype": "INT64", "shape": [-1, 2]}
    assert spec["preprocessing"]["categorical"]["features"][0]["vocabulary"] == [
        None,
        "AA",
        "UA",
        "DL",
    ]
    assert spec["preprocessing"]["numeric"]["features"][0] == {
        "name": "distance",
        "mean": 1000.0,
        "std": 500.0,
        "fill": 1000.0,
    }
    assert spec["lineage"] == {"run": "r1", "auc": 0.7}
    assert sorted(p.name for p in saved.iterdir()) == ["cauce-model.json", "model.pt"]
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temp left

    model = load_model(saved)
    torch.manual_seed(0)
    reference = Tiny().eval()
    cats = np.array([[1, 2], [0, 0], [3, 1]], dtype=np.int64)
    nums = np.array([[0.5, -1], [0, 0], [2, 3]], dtype=np.float32)
    got = model.predict({"categorical": cats, "numeric": nums})["probability"]
    with torch.inference_mode():
        want = reference(torch.from_numpy(cats), torch.from_numpy(nums)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == np.float32 and got.shape == (3,)


def test_preprocess_codes_scales_and_fills(saved: Path) -> None:
    from cauce.serve import load_model

    model = load_model(saved)
    out = model.preprocess(
        [
            {"carrier": "UA", "flight": 202, "distance": 1500, "temp": None, "extra": "ignored"},
            {"carrier": "ZZ", "flight": "202", "distance": float("nan"), "temp": 60.0},
            {"carrier": None, "flight": 999, "distance": 0, "temp": 40},
        ]
    )
    assert out["categorical"].tolist() == [[2, 2], [0, 0], [0, 0]]
    np.testing.assert_allclose(out["numeric"], [[1.0, -5.0], [0.0, 1.0], [-2.0, -1.0]])
    assert out["numeric"].dtype == np.float32
    assert model.preprocess(
        {"records": [{"carrier": "DL", "flight": 101, "distance": 1, "temp": 1}]}
    )["categorical"].tolist() == [[3, 1]]


@pytest.mark.parametrize(
    ("records", "error"),
    [
        ([{"flight": 1, "distance": 1, "temp": 1}], "record 0: feature 'carrier' is missing"),
        (
            [{"carrier": "AA", "flight": 1, "distance": 1, "temp": 1}, {"carrier": "AA"}],
            "record 1: features 'flight', 'distance', 'temp' are missing",
        ),
        (
            [{"carrier": "AA", "flight": 1, "distance": "far", "temp": 1}],
            "'distance' must be a number",
        ),
        ([{"carrier": {}, "flight": 1, "distance": 1, "temp": 1}], "'carrier' must be a string"),
        ([{"carrier": True, "flight": 1, "distance": 1, "temp": 1}], "got a boolean"),
    ],
)
def test_preprocess_errors_name_the_feature(saved: Path, records: Any, error: str) -> None:
    from cauce.serve import load_model

    with pytest.raises(FeatureError, match=error):
        load_model(saved).preprocess(records)


def test_predict_checks_inputs(saved: Path) -> None:
    from cauce.serve import load_model

    model = load_model(saved)
    good = {"categorical": np.zeros((2, 2), np.int64), "numeric": np.zeros((2, 2), np.float32)}
    bad_cases = [
        ({**good, "numeric": np.zeros((2, 2), np.float64)}, "must be FP32"),
        ({**good, "numeric": np.zeros((2, 3), np.float32)}, "shape"),
        ({"categorical": good["categorical"]}, "'numeric' is missing"),
        ({**good, "categorical": np.array([[4, 0], [0, 0]])}, r"column 0 \(carrier\)"),
        ({**good, "numeric": np.zeros((3, 2), np.float32)}, "batch size"),
    ]
    for inputs, error in bad_cases:
        with pytest.raises(InvalidInput, match=error):
            model.predict(inputs)


def test_trace_with_example_inputs(tmp_path: Path) -> None:
    from cauce.serve import load_model, save_model

    example = (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2))
    save_model(
        tmp_path / "t",
        Tiny(),
        name="traced",
        inputs=INPUTS,
        outputs=OUTPUTS,
        preprocessing=PRE,
        example_inputs=example,
    )
    model = load_model(tmp_path / "t")
    assert model.predict(
        model.preprocess([{"carrier": "AA", "flight": 1, "distance": 3, "temp": 1}])
    )["probability"].shape == (1,)


def test_save_refuses_outputs_that_do_not_match(tmp_path: Path) -> None:
    from cauce.serve import save_model

    wrong = [TensorSpec("probability", "FP32", (-1, 1))]
    with pytest.raises(
        ServeError, match=r"output 'probability' has shape \[2\], declared \[-1, 1\]"
    ):
        save_model(tmp_path / "m", Tiny(), name="tiny", inputs=INPUTS, outputs=wrong)
    with pytest.raises(ServeError, match="fails on inputs of the declared shapes"):
        save_model(
            tmp_path / "m",
            Tiny(),
            name="tiny",
            inputs=[INPUTS[0], TensorSpec("numeric", "FP32", (-1, 5))],
            outputs=OUTPUTS,
        )
    with pytest.raises(ServeError, match="does not fill input 'numeric'"):
        save_model(
            tmp_path / "m",
            Tiny(),
            name="tiny",
            inputs=INPUTS,
            outputs=OUTPUTS,
            preprocessing=Preprocessing(categorical=PRE.categorical),
        )
    with pytest.raises(ServeError, match="name must be"):
        save_model(tmp_path / "m", Tiny(), name="bad name", inputs=INPUTS, outputs=OUTPUTS)
    assert not (tmp_path / "m").exists()


def test_save_replaces_a_model_atomically(saved: Path) -> None:
    from cauce.serve import load_model, save_model

    before = _spec(saved)["sha256"]
    torch.manual_seed(1)
    save_model(saved, Tiny(), name="tiny", inputs=INPUTS, outputs=OUTPUTS, preprocessing=PRE)
    assert _spec(saved)["sha256"] != before
    assert load_model(saved).name == "tiny"
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def _rewrite(folder: Path, **changes: Any) -> None:
    spec = _spec(folder)
    for key, value in changes.items():
        if value is None:
            del spec[key]
        else:
            spec[key] = value
    (folder / "cauce-model.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"format_version": 2}, "format_version is 2; this cauce reads up to 1"),
        ({"framework": "onnx"}, "framework must be 'torchscript'"),
        ({"surprise": 1}, "unknown key 'surprise'"),
        ({"name": None}, "name is missing"),
        ({"inputs": []}, "inputs must be a non-empty list"),
        ({"outputs": [{"name": "p", "datatype": "STRING", "shape": [-1]}]}, "datatype must be"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3]}]}, "shape must start with -1"),
        ({"model_file": "../x.pt"}, "must be a file name inside the directory"),
        ({"sha256": "0" * 64}, "does not match the sha256"),
    ],
)
def test_bad_spec_files_are_refused_by_name(
    saved: Path, change: dict[str, Any], error: str
) -> None:
    from cauce.serve import read_spec

    _rewrite(saved, **change)
    with pytest.raises(ModelFormatError, match=error) as info:
        read_spec(saved)
    assert str(saved) in str(info.value)


def test_vocabulary_must_start_with_null(saved: Path) -> None:
    from cauce.serve import read_spec

    spec = _spec(saved)
    spec["preprocessing"]["categorical"]["features"][0]["vocabulary"] = ["AA", "UA"]
    (saved / "cauce-model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelFormatError, match=r"features\[0\].vocabulary must start with null"):
        read_spec(saved)


def test_missing_and_broken_files(tmp_path: Path, saved: Path) -> None:
    from cauce.serve import read_spec

    with pytest.raises(ModelFormatError, match="is not a directory"):
        read_spec(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match=r"cauce-model\.json: is missing"):
        read_spec(tmp_path / "empty")
    (saved / "cauce-model.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="is not valid JSON"):
        read_spec(saved)


def test_a_pickle_is_never_executed(tmp_path: Path, saved: Path) -> None:
    """A model.pt that is a plain pickle (torch.save of an object with __reduce__) is refused,
    and the code it carries never runs."""
    from cauce.serve import load_model

    marker = tmp_path / "pwned"
    script = (
        "import os, torch\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'model': Evil()}}, {str(saved / 'model.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with pytest.raises(ServeError, match=r"not a loadable TorchScript archive|sha256"):
        load_model(saved)
    _rewrite(saved, sha256="")  # even with the hash check out of the way
    with pytest.raises(ServeError, match="not a loadable TorchScript archive"):
        load_model(saved)
    assert not marker.exists()


def test_cuda_asked_for_without_cuda(saved: Path) -> None:
    from cauce.serve import load_model

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ServeError, match="torch sees no CUDA device"):
        load_model(saved, device="cuda")


def test_settings_from_env_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServeSettings(
        "m",
        port=9000,
        workers=2,
        max_batch_size=8,
        max_delay_ms=1.5,
        access_log=True,
        device="cuda:1",
    )
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    assert ServeSettings.from_env() == settings
    monkeypatch.setenv("CAUCE_SERVE_PORT", "x")
    with pytest.raises(ServeError, match=r"\$CAUCE_SERVE_PORT must be an integer"):
        ServeSettings.from_env()
    with pytest.raises(ServeError, match="workers must be >= 1, got 0"):
        ServeSettings("m", workers=0)


def test_import_does_not_load_torch_or_uvicorn() -> None:
    code = (
        "import sys, cauce.serve, cauce.serve.api, cauce.cli._serve\n"
        "cauce.serve.ServeSettings('m')\n"
        "heavy = [m for m in ('torch', 'uvicorn', 'numpy') if m in sys.modules]\n"
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_all_is_complete() -> None:
    import cauce.serve

    for name in cauce.serve.__all__:
        assert getattr(cauce.serve, name) is not None, name
    public = {
        n
        for n, v in vars(cauce.serve).items()
        if not n.startswith("_") and getattr(v, "__module__", "").startswith("cauce.serve")
    }
    assert public <= set(cauce.serve.__all__), sorted(public - set(cauce.serve.__all__))


@pytest.mark.parametrize(
    ("where", "value", "error"),
    [
        ("mean", float("nan"), "mean must be a finite number"),
        ("std", float("inf"), "std must be a finite number"),
        ("fill", -1e300, "fill must be a finite number of magnitude at most 1e+30"),
        ("std", 1e-40, "std must be >= 1e-30"),
        ("mean", 10**400, "mean, std and fill must be finite"),
    ],
)
def test_numeric_fields_of_the_spec_are_bounded(
    saved: Path, where: str, value: float, error: str
) -> None:
    """NaN, infinities and absurd magnitudes in cauce-model.json: one error naming the field."""
    from cauce.serve import read_spec

    spec = _spec(saved)
    spec["preprocessing"]["numeric"]["features"][0][where] = value
    (saved / "cauce-model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelFormatError, match=r"preprocessing.numeric.features\[0\]") as info:
        read_spec(saved)
    assert error in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "shape", [[-1, 10**12], [-1, 4096, 4096, 16], [-1] + [1] * 9], ids=["dim", "row", "rank"]
)
def test_tensor_shapes_of_the_spec_are_bounded(saved: Path, shape: list[int]) -> None:
    from cauce.serve import read_spec

    _rewrite(saved, outputs=[{"name": "probability", "datatype": "FP32", "shape": shape}])
    with pytest.raises(ModelFormatError, match=r"outputs\[0\].*shape must have at most 8"):
        read_spec(saved)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("max_delay_ms", float("nan"), "max_delay_ms must be a finite number, got nan"),
        ("max_delay_ms", float("inf"), "max_delay_ms must be a finite number, got inf"),
        ("max_delay_ms", 1e9, "max_delay_ms must be <= 10000"),
        ("grace_s", float("-inf"), "grace_s must be a finite number"),
        ("max_batch_size", 10**8, "max_batch_size must be <= 65536"),
        ("max_queue", 10**12, "max_queue must be <= 1e+06"),
        ("workers", 10**8, "workers must be <= 256"),
        ("threads", 10**6, "threads must be <= 1024"),
        ("max_body_bytes", 1 << 40, "max_body_bytes must be <= "),
        ("header_timeout_s", float("nan"), "header_timeout_s must be a finite number"),
        ("max_batch_size", True, "max_batch_size must be a number, got True"),
        ("token", "has space", "visible ASCII"),
    ],
)
def test_settings_refuse_absurd_values(field: str, value: Any, error: str) -> None:
    from cauce.serve.api import SettingsError

    with pytest.raises(SettingsError, match=re.escape(error)) as info:
        ServeSettings("m", **{field: value})
    assert info.value.exit_code == 2


def test_the_token_is_not_in_the_repr() -> None:
    settings = ServeSettings("m", token="do-not-print-me")
    assert "do-not-print-me" not in repr(settings)


def test_a_model_on_s3_is_saved_marker_last_and_loaded_from_a_local_copy(
    s3_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cauce.serve import load_model, save_model

    monkeypatch.setenv("CAUCE_HOME", str(tmp_path / "home"))
    if not s3_store.exists("models"):
        s3_store.mkdir("models")
    uri = "s3://models/tiny"
    torch.manual_seed(0)
    module = Tiny()
    saved = save_model(uri, module, name="tiny", inputs=INPUTS, outputs=OUTPUTS, preprocessing=PRE)
    assert saved == uri
    assert sorted(k.rsplit("/", 1)[1] for k in s3_store.find("models/tiny")) == [
        "cauce-model.json",
        "model.pt",
    ]
    model = load_model(uri)
    assert model.path.is_relative_to(tmp_path / "home" / "cache" / "models")
    inputs = {"categorical": np.array([[1, 2]]), "numeric": np.array([[0.5, -1.0]], np.float32)}
    expected = module(torch.from_numpy(inputs["categorical"]), torch.from_numpy(inputs["numeric"]))
    assert model.predict(inputs)["probability"] == pytest.approx(expected.detach().numpy())
    # replaced: the next load reads the new model, not the cached copy of the old one
    torch.manual_seed(1)
    save_model(uri, Tiny(), name="tiny", inputs=INPUTS, outputs=OUTPUTS, version="2")
    assert load_model(uri).version == "2"
    # no marker, no model: a folder whose upload stopped before cauce-model.json
    s3_store.rm_file("models/tiny/cauce-model.json")
    with pytest.raises(ModelFormatError, match=r"s3://models/tiny/cauce-model.json.* is missing"):
        load_model(uri)


def test_a_model_loads_without_the_history_store(saved: Path) -> None:
    """A model server's image has torch and cauce[serve]: loading a model folder must not
    import SQLAlchemy (the history store, MLflow's registry are for models:/ only)."""
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "from cauce.serve import load_model\n"
        f"print(type(load_model({str(saved)!r})).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
