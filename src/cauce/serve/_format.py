"""Save and load a served model: a TorchScript archive and ``cauce-model.json`` in a directory.

``save_model`` compiles the module (``torch.jit.script``, or ``torch.jit.trace`` when
``example_inputs`` are given), runs it once on inputs of the declared shapes to check that its
outputs match the declared ones, and writes the directory atomically: everything goes to a
temporary sibling directory that is renamed into place, so a reader sees the old model or the
new one, never half of one.

``load_model`` reads the spec (checked, see ``_spec.py``), verifies the archive's sha256 and
loads it with ``torch.jit.load``: TorchScript archives hold code that TorchScript compiles and
tensors that its own restricted unpickler reads; no Python pickle of arbitrary objects runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cauce._util.files import swap_dir
from cauce._util.remote import is_uri
from cauce.serve._preprocess import Preprocessor
from cauce.serve._spec import (
    MODEL_FILE,
    SPEC_FILE,
    ModelSpec,
    check_preprocessing,
    file_sha256,
    read_spec,
    spec_from_json,
)
from cauce.serve._store import local_model_dir, upload_model
from cauce.serve._torchscript import check_outputs, example_inputs_for, outputs_of, quiet_jit
from cauce.serve.api import DATATYPES, InvalidInput, Preprocessing, ServeError, TensorSpec

__all__ = ["LoadedModel", "load_model", "save_model"]

log = logging.getLogger(__name__)


def _tensor_specs(
    items: Sequence[TensorSpec | Mapping[str, Any]], what: str
) -> tuple[TensorSpec, ...]:
    out = []
    for item in items:
        if isinstance(item, TensorSpec):
            out.append(item)
        elif isinstance(item, Mapping):
            try:
                out.append(TensorSpec(item["name"], item["datatype"], tuple(item["shape"])))
            except KeyError as exc:
                raise ServeError(f"{what}: tensor {dict(item)!r} lacks {exc}") from None
        else:
            raise ServeError(f"{what}: expected TensorSpec or dict, got {type(item).__name__}")
    if not out:
        raise ServeError(f"{what}: the model needs at least one tensor")
    return tuple(out)


def save_model(
    path: str | os.PathLike[str],
    module: Any,
    *,
    name: str,
    inputs: Sequence[TensorSpec | Mapping[str, Any]],
    outputs: Sequence[TensorSpec | Mapping[str, Any]],
    preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    example_inputs: Sequence[Any] | None = None,
    version: str = "1",
) -> Path | str:
    """Write ``module`` as a served model in directory ``path`` (replacing one there); ``path``
    may be a URI such as ``s3://bucket/models/name`` (see ``_store``).

    ``inputs`` are passed to ``forward`` positionally, in this order; ``forward`` returns one
    tensor, a tuple of them (in the order of ``outputs``) or a dict by output name.
    ``preprocessing`` is a :class:`Preprocessing` or its ``cauce-model.json`` form.
    ``lineage`` is free JSON (run id, dataset hash, metrics). Returns the directory.
    """
    import torch

    if isinstance(preprocessing, Mapping):
        pre = spec_from_json(
            {
                "format_version": 1,
                "name": name,
                "version": version,
                "framework": "torchscript",
                "model_file": MODEL_FILE,
                "sha256": "",
                "inputs": [t.to_json() for t in _tensor_specs(inputs, "inputs")],
                "outputs": [t.to_json() for t in _tensor_specs(outputs, "outputs")],
                "preprocessing": dict(preprocessing),
            },
            "preprocessing",
        ).preprocessing
    else:
        pre = preprocessing
    try:
        lineage_json = json.loads(json.dumps(dict(lineage or {})))
    except (TypeError, ValueError) as exc:
        raise ServeError(f"lineage must be JSON-serializable: {exc}") from None
    spec = ModelSpec(
        name=name,
        version=version,
        inputs=_tensor_specs(inputs, "inputs"),
        outputs=_tensor_specs(outputs, "outputs"),
        preprocessing=pre,
        lineage=lineage_json,
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        torch_version=str(torch.__version__),
    )
    check_preprocessing(spec)
    module.eval()
    try:
        with quiet_jit():
            if isinstance(module, torch.jit.ScriptModule):
                compiled = module
            elif example_inputs is not None:
                compiled = torch.jit.trace(module, tuple(example_inputs))  # type: ignore[no-untyped-call]
            else:
                compiled = torch.jit.script(module)
    except Exception as exc:  # torch raises many kinds; say which step failed
        how = "trace" if example_inputs is not None else "script"
        raise ServeError(f"torch.jit.{how} failed for model {name!r}: {exc}") from exc
    check_outputs(spec, compiled)

    remote = is_uri(path)
    target: Path | str = str(path) if remote else Path(path).absolute()
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cauce-model-"))
    try:
        with quiet_jit():
            torch.jit.save(compiled, str(tmp / MODEL_FILE))
        final = ModelSpec(**{**spec.__dict__, "sha256": file_sha256(tmp / MODEL_FILE)})
        text = json.dumps(final.to_json(), indent=2, ensure_ascii=False) + "\n"
        (tmp / SPEC_FILE).write_text(text, encoding="utf-8")
        if isinstance(target, Path):
            swap_dir(tmp, target)
        else:
            upload_model(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved model %s version %s to %s", name, version, target)
    return target


class LoadedModel:
    """A model ready to run. ``predict`` checks its inputs; ``run`` trusts them (used after
    the server has checked each request). Both may be called from any one thread at a time per
    call; TorchScript modules are safe to call concurrently for inference.
    """

    def __init__(self, path: Path, spec: ModelSpec, module: Any, device: str) -> None:
        self.path = path
        self.spec = spec
        self.device = device
        self._module = module
        self._pre = Preprocessor(spec.preprocessing) if spec.preprocessing else None
        self._ranges: dict[str, npt.NDArray[np.int64]] = {}
        if self._pre is not None and spec.preprocessing and spec.preprocessing.categorical:
            self._ranges[spec.preprocessing.categorical_input] = self._pre.max_codes

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.spec.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.spec.outputs

    @property
    def preprocessor(self) -> Preprocessor | None:
        return self._pre

    def preprocess(
        self, records: object, unknown: set[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Raw feature records (``list[dict]``) to input arrays; raises FeatureError. Fields
        that are not features are ignored, their names put in ``unknown``."""
        if self._pre is None:
            raise InvalidInput(f"model {self.name!r} was saved without preprocessing", status=404)
        return self._pre.records(records, unknown)

    def check(self, inputs: Mapping[str, npt.NDArray[Any]]) -> int:
        """Check names, datatypes, shapes and category codes; returns the batch size."""
        want = {t.name: t for t in self.inputs}
        extra = sorted(set(inputs) - set(want))
        if extra:
            raise InvalidInput(f"unknown input {extra[0]!r}; the model takes {list(want)}")
        rows: set[int] = set()
        for name, t in want.items():
            arr = inputs.get(name)
            if not isinstance(arr, np.ndarray):
                raise InvalidInput(f"input {name!r} is missing (or not a NumPy array)")
            if arr.dtype != np.dtype(DATATYPES[t.datatype]):
                raise InvalidInput(f"input {name!r} must be {t.datatype}, got {arr.dtype}")
            if arr.ndim != len(t.shape) or any(
                d not in (-1, g) for d, g in zip(t.shape[1:], arr.shape[1:], strict=True)
            ):
                raise InvalidInput(
                    f"input {name!r} must have shape {list(t.shape)}, got {list(arr.shape)}"
                )
            rows.add(arr.shape[0])
        if len(rows) != 1:
            raise InvalidInput(f"inputs disagree on the batch size: {sorted(rows)}")
        self.check_codes(inputs)
        return rows.pop()

    def check_codes(self, inputs: Mapping[str, npt.NDArray[Any]]) -> None:
        """Category codes must be within their vocabularies (0 for unknown values)."""
        for name, limit in self._ranges.items():
            arr = inputs[name]
            if arr.size and (arr.min() < 0 or (arr > limit).any()):
                col = int(np.argmax(((arr < 0) | (arr > limit)).any(axis=0)))
                feature = self.spec.preprocessing.categorical[col].name  # type: ignore[union-attr]
                raise InvalidInput(
                    f"input {name!r} column {col} ({feature}) holds a code outside "
                    f"0..{int(limit[col])}; code 0 is for unknown values"
                )

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run the model on checked inputs (every declared input, in any order)."""
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in self.inputs]
            if self.device != "cpu":
                args = [a.to(self.device, non_blocking=True) for a in args]
            out = outputs_of(self.spec, self._module(*args))
        rows = args[0].shape[0]
        for name, arr in out.items():
            if arr.shape[0] != rows:
                raise ServeError(f"output {name!r} has {arr.shape[0]} rows for {rows} input rows")
        return out

    def predict(self, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Check the inputs, run the model, and return its outputs by name."""
        self.check(inputs)
        return self.run(inputs)

    def warmup(self, max_batch_size: int) -> None:
        """Run every power-of-two batch size up to ``max_batch_size`` a few times."""
        size = 1
        while True:
            for _ in range(3):
                self.run(example_inputs_for(self.spec, size))
            if size >= max_batch_size:
                break
            size = min(size * 2, max_batch_size)


def load_model(path: str | os.PathLike[str], *, device: str = "cpu") -> LoadedModel:
    """Read ``path/cauce-model.json`` and load its TorchScript archive onto ``device``; a URI
    (``s3://...``) is copied to a cache on this host first."""
    import torch

    folder = local_model_dir(path if isinstance(path, str) else Path(path))
    spec = read_spec(folder)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ServeError(f"device {device!r} asked for, but torch sees no CUDA device here")
    file = folder / spec.model_file
    try:
        with quiet_jit():
            module = torch.jit.load(str(file), map_location=device)  # type: ignore[no-untyped-call]
    except Exception as exc:  # RuntimeError mostly; a non-TorchScript file says why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServeError(f"{file}: not a loadable TorchScript archive: {first}") from exc
    module.eval()
    log.info("loaded model %s version %s from %s on %s", spec.name, spec.version, folder, device)
    return LoadedModel(folder, spec, module, device)
