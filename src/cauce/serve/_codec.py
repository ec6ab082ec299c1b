"""Open Inference Protocol (KServe v2) request and response bodies, JSON and binary.

The binary tensor extension (what ``tritonclient`` sends by default): the request body is a JSON
header of ``Inference-Header-Content-Length`` bytes followed by the raw little-endian bytes of
every input whose ``parameters.binary_data_size`` is set, in order; outputs asked for with
``parameters.binary_data`` (or ``parameters.binary_data_output`` on the request) come back the
same way. Everything that is wrong in a request raises :class:`InvalidInput` with a message that
names the tensor and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from cauce.serve.api import DATATYPES, InvalidInput, TensorSpec

__all__ = ["InferRequest", "decode_infer", "encode_infer", "loads"]

_DTYPES = {name: np.dtype(np_name) for name, np_name in DATATYPES.items()}
_KINDS_OK = {"b": "b", "u": "ui", "i": "ui", "f": "uif"}  # data kind allowed per target kind
# model_name and model_version: what KServe's InferenceRESTClient sends besides the protocol's.
_REQUEST_KEYS = {"id", "parameters", "inputs", "outputs", "model_name", "model_version"}
_INPUT_KEYS = {"name", "shape", "datatype", "parameters", "data"}


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, npt.NDArray[Any]]
    rows: int
    outputs: list[tuple[str, bool]]  # (name, binary) in the order asked for


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    return value


def _params(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = obj.get("parameters", {})
    if params is None:
        return {}
    return _obj(params, f"{where}.parameters")


def _has_bool(data: object) -> bool:
    """Whether nested lists hold a JSON true or false (NumPy reads [true, 2] as [1, 2])."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, bool):
            return True
    return False


def _array(
    spec: TensorSpec,
    item: Mapping[str, Any],
    binary: memoryview,
    offset: int,
    may_have_bools: bool,
) -> tuple[npt.NDArray[Any], int]:
    name = spec.name
    datatype = item.get("datatype")
    if datatype != spec.datatype:
        raise InvalidInput(f"input {name!r} must have datatype {spec.datatype}, got {datatype!r}")
    shape = item.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) > 8
    ):
        raise InvalidInput(f"input {name!r}: shape must be a list of sizes >= 0, got {shape!r}")
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape[1:], shape[1:], strict=True)
    ):
        raise InvalidInput(
            f"input {name!r} must have shape {list(spec.shape)} (-1: any size), got {shape}"
        )
    dtype = _DTYPES[spec.datatype]
    count = math.prod(shape)
    size = _params(item, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a size, got {size!r}")
        if size != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: binary_data_size is {size} bytes, but shape {shape} of "
                f"{spec.datatype} needs {count * dtype.itemsize}"
            )
        if offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: the body ends before its {size} binary bytes")
        arr = np.frombuffer(binary[offset : offset + size], dtype=dtype.newbyteorder("<"))
        return arr.astype(dtype, copy=False).reshape(shape), offset + size
    if "data" not in item:
        raise InvalidInput(f"input {name!r} has no data (nor parameters.binary_data_size)")
    try:
        raw = np.asarray(item["data"])
    except (ValueError, TypeError):
        raise InvalidInput(f"input {name!r}: data is ragged or not numbers") from None
    if raw.size != count:
        raise InvalidInput(
            f"input {name!r}: data holds {raw.size} values, shape {shape} needs {count}"
        )
    kind = raw.dtype.kind
    if count and dtype.kind != "b" and kind != "b" and may_have_bools and _has_bool(item["data"]):
        kind = "b"  # true or false among numbers: NumPy made them 1 and 0
    if count and kind not in _KINDS_OK[dtype.kind]:
        what = {"U": "strings", "O": "mixed values", "f": "non-integers", "b": "booleans"}
        held = what.get(kind, f"values of kind {kind!r}")
        raise InvalidInput(f"input {name!r}: datatype {spec.datatype} cannot hold {held}")
    if count and dtype.kind in "ui" and kind in "ui":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInput(f"input {name!r}: a value is out of range for {spec.datatype}")
    out = raw.astype(dtype, copy=False)
    if count and dtype.kind == "f" and not np.isfinite(out).all():
        raise InvalidInput(
            f"input {name!r}: a value is out of range for {spec.datatype} "
            f"(largest magnitude {float(np.finfo(dtype).max):g})"
        )
    return out.reshape(shape), offset


def decode_infer(
    body: bytes,
    header_length: int | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[str],
    model: tuple[str, str] = ("", ""),
    *,
    raw: Sequence[str] = (),
) -> InferRequest:
    """Parse and check an ``/infer`` body against the model's tensors; ``model`` is its name and
    version, which a ``model_name`` or ``model_version`` in the body must match; ``raw`` the
    raw features of its preprocessing (an input named after one was meant for ``/predict``)."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length}, "
                f"the body has {len(body)} bytes"
            )
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    req = _obj(loads(head), "the request")
    unknown = sorted(set(req) - _REQUEST_KEYS)
    if unknown:
        raise InvalidInput(f"the request has unknown key {unknown[0]!r}")
    for key, expected in zip(("model_name", "model_version"), model, strict=True):
        if key in req and req[key] != expected:
            raise InvalidInput(
                f"{key} {req[key]!r} in the body does not match the URL's {expected!r}"
            )
    may_have_bools = b"true" in head or b"false" in head
    items = req.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidInput("the request must have a non-empty list 'inputs'")
    by_name = {t.name: t for t in inputs}
    arrays: dict[str, npt.NDArray[Any]] = {}
    offset = 0
    for i, item in enumerate(items):
        item = _obj(item, f"inputs[{i}]")
        name = item.get("name")
        if not isinstance(name, str) or name not in by_name:
            hint = (
                f"; {name!r} is a raw feature: send raw records to POST "
                f"/v2/models/{model[0]}/predict"
                if name in raw
                else ""
            )
            raise InvalidInput(
                f"inputs[{i}]: unknown input {name!r}; the model takes {list(by_name)}{hint}"
            )
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice")
        bad = sorted(set(item) - _INPUT_KEYS)
        if bad:
            raise InvalidInput(f"input {name!r} has unknown key {bad[0]!r}")
        arrays[name], offset = _array(by_name[name], item, binary, offset, may_have_bools)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} binary bytes after the last input")
    missing = [n for n in by_name if n not in arrays]
    if missing:
        raise InvalidInput(f"input {missing[0]!r} is missing; the model takes {list(by_name)}")
    rows = {a.shape[0] for a in arrays.values()}
    if len(rows) != 1:
        raise InvalidInput(f"inputs disagree on the batch size (first dimension): {sorted(rows)}")
    n = rows.pop()
    if n == 0:
        raise InvalidInput("the batch is empty (first dimension 0)")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput(f"id must be a string, got {rid!r}")
    all_binary = bool(_params(req, "the request").get("binary_data_output", False))
    wanted = req.get("outputs")
    asked: list[tuple[str, bool]] = []
    if wanted is None:
        asked = [(name, all_binary) for name in outputs]
    else:
        if not isinstance(wanted, list):
            raise InvalidInput("outputs must be a list")
        for i, out in enumerate(wanted):
            out = _obj(out, f"outputs[{i}]")
            name = out.get("name")
            if name not in outputs:
                raise InvalidInput(
                    f"outputs[{i}]: unknown output {name!r}; the model has {list(outputs)}"
                )
            binary_out = _params(out, f"output {name!r}").get("binary_data", all_binary)
            asked.append((str(name), bool(binary_out)))
    return InferRequest(rid, arrays, n, asked)


def encode_infer(
    model: str,
    version: str,
    request: InferRequest,
    results: Mapping[str, npt.NDArray[Any]],
    datatypes: Mapping[str, str],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in request.outputs:
        arr = np.ascontiguousarray(results[name])
        out: dict[str, Any] = {"name": name, "datatype": datatypes[name], "shape": list(arr.shape)}
        if binary:
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = arr.reshape(-1)
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
