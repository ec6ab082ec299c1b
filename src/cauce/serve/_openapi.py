"""The OpenAPI 3.1 document of a server's endpoints, served at ``GET /v2/openapi.json``.

Built from the model's spec, so that its paths name the model, its inputs and outputs and, for
``/predict``, its raw features: a tool such as schemathesis can generate requests from it and
check the answers. The binary tensor extension of ``/infer`` is described in prose only.
"""

from __future__ import annotations

import math
from typing import Any

from cauce.serve._spec import ModelSpec
from cauce.serve.api import DATATYPES

__all__ = ["openapi"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str, *, headers: dict[str, Any] | None = None) -> Any:
    out: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": _ref(schema)}},
    }
    if headers:
        out["headers"] = headers
    return out


_ERRORS = {
    "400": "the request is invalid; the message names the problem",
    "401": "a token is needed (Authorization: Bearer TOKEN)",
    "404": "no such model, version or route",
    "405": "the method is not the one this endpoint takes",
    "413": "the body is larger than the server's limit",
    "415": "the Content-Encoding is not supported",
    "422": "the model could not run these inputs",
    "503": "the model is loading or the queue is full; retry after Retry-After seconds",
}


def _errors(*codes: str, token: bool) -> dict[str, Any]:
    wanted = [c for c in ("401", "405", *codes) if c != "401" or token]
    out: dict[str, Any] = {}
    for code in wanted:
        headers = None
        if code == "405":
            headers = {"Allow": {"schema": {"type": "string"}}}
        if code == "503":
            headers = {"Retry-After": {"schema": {"type": "string"}}}
        out[code] = _answer(_ERRORS[code], "Error", headers=headers)
    return out


def _tensor_schemas(spec: ModelSpec) -> dict[str, Any]:
    names = [t.name for t in spec.inputs]
    outputs = [t.name for t in spec.outputs]
    nested: dict[str, Any] = {
        "anyOf": [
            {"type": "number"},
            {"type": "boolean"},
            {"type": "array", "items": {"$ref": "#/components/schemas/TensorData"}},
        ]
    }
    params = {"type": ["object", "null"]}  # null: none, as the server reads it
    return {
        "TensorData": nested,
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"enum": list(DATATYPES)},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "RequestInput": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"enum": names},
                "shape": {
                    "type": "array",
                    "maxItems": 8,
                    "items": {"type": "integer", "minimum": 0},
                },
                "datatype": {"enum": list(DATATYPES)},
                "parameters": {
                    "type": ["object", "null"],
                    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                },
                "data": {"type": "array", "items": _ref("TensorData")},
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"enum": outputs}, "parameters": params},
        },
        "InferenceRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["inputs"],
            "properties": {
                "id": {"type": ["string", "null"]},  # null: none, as for outputs
                "model_name": {"const": spec.name},
                "model_version": {"const": spec.version},
                "parameters": params,
                "inputs": {"type": "array", "minItems": 1, "items": _ref("RequestInput")},
                "outputs": {"type": ["array", "null"], "items": _ref("RequestOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"enum": outputs},
                "datatype": {"enum": list(DATATYPES)},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "data": {"type": "array", "items": {"type": ["number", "boolean"]}},
                "parameters": params,
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"const": spec.name},
                "model_version": {"const": spec.version},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
    }


def _record_schema(spec: ModelSpec) -> dict[str, Any]:
    pre = spec.preprocessing
    if pre is None:
        return {"type": "object"}
    props: dict[str, Any] = {}
    for cat in pre.categorical:
        props[cat.name] = {"type": ["string", "number", "null"]}
    for num in pre.numeric:  # a number whose scaled value overflows FP32 gets a 400
        props[num.name] = {"type": ["number", "null"]}
    return {"type": "object", "required": pre.features, "properties": props}


def _schemas(spec: ModelSpec) -> dict[str, Any]:
    records = {"type": "array", "minItems": 1, "items": _ref("Record")}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"const": True}}},
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"const": spec.name},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            },
        },
        "Record": _record_schema(spec),
        "RawSchema": {
            "type": "object",
            "required": ["name", "version", "fields", "unknown_fields"],
            "properties": {
                "name": {"const": spec.name},
                "version": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "object"}},
                "unknown_fields": {"const": "ignored"},
            },
        },
        "PredictRequest": {
            "oneOf": [
                records,
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["records"],
                    "properties": {"records": records},
                },
            ]
        },
        "PredictResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "outputs"],
            "properties": {
                "model_name": {"const": spec.name},
                "model_version": {"const": spec.version},
                "outputs": {
                    "type": "object",
                    "properties": {
                        t.name: {"type": "array", "items": {"type": ["number", "boolean"]}}
                        for t in spec.outputs
                    },
                },
            },
        },
        **_tensor_schemas(spec),
    }


def openapi(spec: ModelSpec, *, token: bool) -> dict[str, Any]:
    """The document for a server of ``spec``; ``token``: whether it needs one."""
    import cauce

    # Any other name or version gets a 404 (documented), but the enums lead generated
    # requests to the model rather than to 404s.
    name = {"name": "model_name", "in": "path", "required": True, "schema": {"enum": [spec.name]}}
    version = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "schema": {"enum": [spec.version]},
    }
    secured: dict[str, Any] = {"security": [{"bearer": []}]} if token else {}
    open_: dict[str, Any] = {"security": []} if token else {}

    def get(summary: str, schema: str, *codes: str, secure: bool = True) -> dict[str, Any]:
        responses = {"200": _answer(summary, schema), **_errors(*codes, token=token and secure)}
        return {
            "get": {"summary": summary, "responses": responses, **(secured if secure else open_)}
        }

    def post(summary: str, request: str, response: str, example: Any) -> dict[str, Any]:
        codes = ("400", "404", "413", "415", "422", "503")
        media = {"schema": _ref(request), "example": example}
        body = {"required": True, "content": {_JSON: media}}
        return {
            "post": {
                "summary": summary,
                "requestBody": body,
                "responses": {"200": _answer(summary, response), **_errors(*codes, token=token)},
                **secured,
            }
        }

    ready = get("whether the model is ready", "ModelReady", "404", "503", secure=False)
    model_paths = {
        "": get("model metadata", "ModelMetadata", "404"),
        "/ready": ready,
        "/infer": post(
            "Open Inference Protocol inference",
            "InferenceRequest",
            "InferenceResponse",
            _infer_example(spec),
        ),
        "/predict": {
            **post(
                "raw records, preprocessed as saved",
                "PredictRequest",
                "PredictResponse",
                [dict.fromkeys(spec.preprocessing.features)] if spec.preprocessing else [],
            ),
            **get("the raw record's fields, their types and nullability", "RawSchema", "404"),
        },
    }
    paths: dict[str, Any] = {
        "/v2/health/live": get("live", "Live", secure=False),
        "/v2/health/ready": get("ready once the model is warmed up", "Ready", "503", secure=False),
        "/v2": get("server metadata", "ServerMetadata"),
    }
    for suffix, item in model_paths.items():
        paths[f"/v2/models/{{model_name}}{suffix}"] = _with_params(item, [name])
        paths[f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}"] = _with_params(
            item, [name, version]
        )
    metrics = {"200": {"description": "Prometheus exposition", "content": {"text/plain": {}}}}
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {**metrics, **_errors(token=token)},
            **secured,
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"cauce serve: model {spec.name}",
            "version": cauce.__version__,
            "description": "Open Inference Protocol v2 (KServe, Triton) for one model, plus "
            "/predict for raw records. /infer also takes the binary tensor extension "
            "(Inference-Header-Content-Length) and gzip or deflate bodies.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(spec)},
    }
    if token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc


def _with_params(item: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
    return {**item, "parameters": params}


def _infer_example(spec: ModelSpec) -> dict[str, Any]:
    """One row of zeros (code 0: unknown category), every dimension of any size made 1."""
    inputs = []
    for t in spec.inputs:
        shape = [1] + [max(d, 1) for d in t.shape[1:]]
        zero: Any = False if t.datatype == "BOOL" else 0
        data = [zero] * math.prod(shape)
        inputs.append({"name": t.name, "datatype": t.datatype, "shape": shape, "data": data})
    return {"inputs": inputs}
