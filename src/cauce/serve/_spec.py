"""``cauce-model.json``: what a model directory holds, read and checked without torch.

A model directory::

    cauce-model.json    this spec (format version, name, tensors, preprocessing, lineage)
    model.pt            the TorchScript archive (``torch.jit.save``), whose sha256 is in the spec

Readers refuse a format version newer than theirs, unknown keys, and a model file whose hash
does not match, each with a message naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cauce.serve.api import (
    CategoricalFeature,
    ModelFormatError,
    NumericFeature,
    Preprocessing,
    ServeError,
    TensorSpec,
    check_name,
)

SPEC_FILE = "cauce-model.json"
MODEL_FILE = "model.pt"
FORMAT_VERSION = 1
FRAMEWORK = "torchscript"

_TOP_KEYS = {
    "format_version",
    "name",
    "version",
    "framework",
    "model_file",
    "sha256",
    "inputs",
    "outputs",
    "preprocessing",
    "lineage",
    "created_at",
    "torch_version",
}
_NUMERIC_KEYS = ("mean", "std", "fill")


@dataclass(frozen=True)
class ModelSpec:
    """The parsed ``cauce-model.json`` of a model directory."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    version: str = "1"
    framework: str = FRAMEWORK
    model_file: str = MODEL_FILE
    sha256: str = ""
    preprocessing: Preprocessing | None = None
    lineage: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""
    torch_version: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        check_name(self.version, "version")
        for what, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors]
            if not names or len(set(names)) != len(names):
                raise ServeError(f"{what} must name at least one tensor, each once: {names}")

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def metadata(self) -> dict[str, Any]:
        """Open Inference Protocol model metadata."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "pytorch_torchscript",
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "framework": self.framework,
            "model_file": self.model_file,
            "sha256": self.sha256,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "preprocessing": preprocessing_to_json(self.preprocessing),
            "lineage": dict(self.lineage),
            "created_at": self.created_at,
            "torch_version": self.torch_version,
        }


def preprocessing_to_json(pre: Preprocessing | None) -> dict[str, Any] | None:
    if pre is None:
        return None
    out: dict[str, Any] = {}
    if pre.categorical:
        out["categorical"] = {
            "input": pre.categorical_input,
            "features": [
                {"name": f.name, "vocabulary": [None, *f.vocabulary]} for f in pre.categorical
            ],
        }
    if pre.numeric:
        out["numeric"] = {
            "input": pre.numeric_input,
            "features": [
                {"name": f.name, "mean": f.mean, "std": f.std, "fill": f.fill_value}
                for f in pre.numeric
            ],
        }
    return out


class _Reader:
    """Typed access to a parsed JSON object, raising ModelFormatError naming file and field."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> ModelFormatError:
        return ModelFormatError(self.path, f"{where} {problem}" if where else problem)

    def obj(self, value: object, where: str, keys: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, got {type(value).__name__}")
        unknown = sorted(set(value) - keys)
        if unknown:
            raise self.fail(where, f"has unknown key {unknown[0]!r} (known: {sorted(keys)})")
        return value

    def get(
        self, obj: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]
    ) -> Any:
        if key not in obj:
            raise self.fail(f"{where}.{key}".lstrip("."), "is missing")
        value = obj[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            value = object()  # true/false is not a number here
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(f"{where}.{key}".lstrip("."), f"must be {names}, got {obj[key]!r}")
        return value

    def tensors(self, value: object, where: str) -> tuple[TensorSpec, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "must be a non-empty list of tensors")
        out = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            obj = self.obj(item, at, {"name", "datatype", "shape"})
            shape = self.get(obj, "shape", at, list)
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
                raise self.fail(f"{at}.shape", f"must be a list of integers, got {shape!r}")
            try:
                out.append(
                    TensorSpec(
                        self.get(obj, "name", at, str),
                        self.get(obj, "datatype", at, str),
                        tuple(shape),
                    )
                )
            except ServeError as exc:
                raise self.fail(at, str(exc)) from None
        names = [t.name for t in out]
        if len(set(names)) != len(names):
            raise self.fail(where, f"names a tensor twice: {names}")
        return tuple(out)

    def preprocessing(self, value: object) -> Preprocessing | None:
        if value is None:
            return None
        obj = self.obj(value, "preprocessing", {"categorical", "numeric"})
        cats: list[CategoricalFeature] = []
        nums: list[NumericFeature] = []
        inputs = {"categorical": "categorical", "numeric": "numeric"}
        for kind in ("categorical", "numeric"):
            if kind not in obj:
                continue
            at = f"preprocessing.{kind}"
            group = self.obj(obj[kind], at, {"input", "features"})
            inputs[kind] = self.get(group, "input", at, str)
            feats = self.get(group, "features", at, list)
            for i, item in enumerate(feats):
                fat = f"{at}.features[{i}]"
                try:
                    if kind == "categorical":
                        f = self.obj(item, fat, {"name", "vocabulary"})
                        vocab = self.get(f, "vocabulary", fat, list)
                        if not vocab or vocab[0] is not None:
                            raise self.fail(f"{fat}.vocabulary", "must start with null (code 0)")
                        cats.append(CategoricalFeature(self.get(f, "name", fat, str), vocab[1:]))
                    else:
                        f = self.obj(item, fat, {"name", "mean", "std", "fill"})
                        num = (int, float)
                        try:
                            values = [float(self.get(f, k, fat, num)) for k in _NUMERIC_KEYS]
                        except OverflowError:
                            raise self.fail(fat, "mean, std and fill must be finite") from None
                        nums.append(NumericFeature(self.get(f, "name", fat, str), *values))
                except ServeError as exc:
                    if isinstance(exc, ModelFormatError):
                        raise
                    raise self.fail(fat, str(exc)) from None
        try:
            return Preprocessing(tuple(cats), tuple(nums), inputs["categorical"], inputs["numeric"])
        except ServeError as exc:
            raise self.fail("", str(exc)) from None


def spec_from_json(data: object, path: str) -> ModelSpec:
    """Check a parsed ``cauce-model.json``; ``path`` is only for messages."""
    r = _Reader(path)
    top = r.obj(data, "", _TOP_KEYS)
    version = r.get(top, "format_version", "", int)
    if version > FORMAT_VERSION or version < 1:
        raise r.fail(
            "format_version", f"is {version}; this cauce reads up to {FORMAT_VERSION}: upgrade it"
        )
    framework = r.get(top, "framework", "", str)
    if framework != FRAMEWORK:
        raise r.fail("framework", f"must be {FRAMEWORK!r}, got {framework!r}")
    model_file = r.get(top, "model_file", "", str)
    if "/" in model_file or "\\" in model_file or model_file.startswith("."):
        raise r.fail("model_file", f"must be a file name inside the directory, got {model_file!r}")
    try:
        name = check_name(r.get(top, "name", "", str), "name")
        model_version = check_name(r.get(top, "version", "", str), "version")
    except ModelFormatError:
        raise
    except ServeError as exc:
        raise r.fail("", str(exc)) from None
    spec = ModelSpec(
        name=name,
        version=model_version,
        inputs=r.tensors(top.get("inputs"), "inputs"),
        outputs=r.tensors(top.get("outputs"), "outputs"),
        framework=framework,
        model_file=model_file,
        sha256=r.get(top, "sha256", "", str),
        preprocessing=r.preprocessing(top.get("preprocessing")),
        lineage=r.get(top, "lineage", "", dict) if "lineage" in top else {},
        created_at=str(top.get("created_at", "")),
        torch_version=str(top.get("torch_version", "")),
        format_version=version,
    )
    check_preprocessing(spec, r)
    return spec


def check_preprocessing(spec: ModelSpec, r: _Reader | None = None) -> None:
    """The inputs that preprocessing fills must exist, with the right datatype and width."""
    pre = spec.preprocessing
    if pre is None:
        return
    fail = (r or _Reader(SPEC_FILE)).fail
    groups: Sequence[tuple[str, Sequence[object], str]] = [
        (pre.categorical_input, pre.categorical, "INT64"),
        (pre.numeric_input, pre.numeric, "FP32"),
    ]
    for name, feats, datatype in groups:
        if not feats:
            continue
        t = spec.input(name)
        if t is None:
            raise fail("preprocessing", f"fills input {name!r}, which the model does not have")
        if t.datatype != datatype or len(t.shape) != 2 or t.shape[1] not in (-1, len(feats)):
            raise fail(
                "preprocessing",
                f"fills input {name!r} as {datatype} [-1, {len(feats)}], but the model declares "
                f"{t.datatype} {list(t.shape)}",
            )
    filled = {n for n, feats, _ in groups if feats}
    missing = [t.name for t in spec.inputs if t.name not in filled]
    if missing:
        raise fail("preprocessing", f"does not fill input {missing[0]!r} of the model")


def read_spec(model_dir: str | os.PathLike[str], *, verify_hash: bool = True) -> ModelSpec:
    """Read and check ``MODEL_DIR/cauce-model.json`` (and the model file's hash)."""
    folder = Path(model_dir)
    path = folder / SPEC_FILE
    if not folder.is_dir():
        raise ModelFormatError(str(folder), "is not a directory (expected a model directory)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFormatError(str(path), "is missing: not a cauce model directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(str(path), f"cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(str(path), f"is not valid JSON: {exc}") from None
    spec = spec_from_json(data, str(path))
    model = folder / spec.model_file
    if not model.is_file():
        raise ModelFormatError(str(model), "is missing (named by model_file in cauce-model.json)")
    if verify_hash and spec.sha256 and file_sha256(model) != spec.sha256:
        raise ModelFormatError(
            str(model), "does not match the sha256 in cauce-model.json (changed or truncated)"
        )
    return spec


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
