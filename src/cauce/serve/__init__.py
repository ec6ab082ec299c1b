"""Serving: the model format, the model server, packaging for Kubernetes, and batch scoring.

    cauce.serve.save_model("runs/1/model", net, name="flights", inputs=[...], outputs=[...],
                           preprocessing=cauce.serve.Preprocessing(...))
    model = cauce.serve.load_model("runs/1/model")
    model.predict(model.preprocess([{"carrier": "UA", "origin": "EWR", ...}]))

``cauce serve MODEL_DIR`` answers the Open Inference Protocol v2 over HTTP with adaptive
dynamic batching; ``cauce package`` writes a Dockerfile and Kubernetes manifests; ``cauce
predict`` scores a Parquet dataset. See docs/serving.md.

Importing this package does not import torch; ``save_model`` and ``load_model`` do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cauce.serve.api import (
    DATATYPES,
    CategoricalFeature,
    FeatureError,
    InvalidInput,
    ModelFormatError,
    NumericFeature,
    OutputExists,
    Preprocessing,
    QueueFull,
    ServeError,
    ServeSettings,
    SettingsError,
    TensorSpec,
)

if TYPE_CHECKING:
    from cauce.serve._app import ServeApp
    from cauce.serve._format import LoadedModel, load_model, save_model
    from cauce.serve._package import package
    from cauce.serve._predict import predict_dataset, scored_model
    from cauce.serve._predict_spark import hadoop_uri, scoring_session
    from cauce.serve._ready import server_url
    from cauce.serve._scoring import arrow_inputs
    from cauce.serve._server import serve
    from cauce.serve._spark_udf import spark_udf
    from cauce.serve._spec import SPEC_FILE, ModelSpec, read_spec
    from cauce.serve._store import local_model_dir
    from cauce.serve._stream import StreamResult, committed_files, stream_predict

__all__ = [
    "DATATYPES",
    "SPEC_FILE",
    "CategoricalFeature",
    "FeatureError",
    "InvalidInput",
    "LoadedModel",
    "ModelFormatError",
    "ModelSpec",
    "NumericFeature",
    "OutputExists",
    "Preprocessing",
    "QueueFull",
    "ServeApp",
    "ServeError",
    "ServeSettings",
    "SettingsError",
    "StreamResult",
    "TensorSpec",
    "arrow_inputs",
    "committed_files",
    "hadoop_uri",
    "load_model",
    "local_model_dir",
    "package",
    "predict_dataset",
    "read_spec",
    "save_model",
    "scored_model",
    "scoring_session",
    "serve",
    "server_url",
    "spark_udf",
    "stream_predict",
]

_LAZY = {
    "LoadedModel": "cauce.serve._format",
    "load_model": "cauce.serve._format",
    "save_model": "cauce.serve._format",
    "ServeApp": "cauce.serve._app",
    "serve": "cauce.serve._server",
    "package": "cauce.serve._package",
    "predict_dataset": "cauce.serve._predict",
    "arrow_inputs": "cauce.serve._scoring",
    "scored_model": "cauce.serve._predict",
    "spark_udf": "cauce.serve._spark_udf",
    "hadoop_uri": "cauce.serve._predict_spark",
    "scoring_session": "cauce.serve._predict_spark",
    "StreamResult": "cauce.serve._stream",
    "committed_files": "cauce.serve._stream",
    "stream_predict": "cauce.serve._stream",
    "server_url": "cauce.serve._ready",
    "local_model_dir": "cauce.serve._store",
    "ModelSpec": "cauce.serve._spec",
    "SPEC_FILE": "cauce.serve._spec",
    "read_spec": "cauce.serve._spec",
}


def __getattr__(name: str) -> Any:
    """Import the heavier parts (numpy, torch, uvicorn) only when they are used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cauce.serve' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
