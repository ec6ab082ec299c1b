"""Steps 4 and 5 of the hand-built flights pipeline (``flights_handbuilt.py``): the saved model
scored on the test split from raw columns, MLlib's logistic regression beside it, and the model
served by FastAPI + uvicorn in a child process (``flights_handbuilt.py serve MODEL --port P``)
for one prediction over HTTP.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HANDBUILT = Path(__file__).resolve().with_name("flights_handbuilt.py")


# --- 4. evaluate ------------------------------------------------------------------------------


def load_model(folder: Path) -> tuple[Any, Any]:
    """The saved model: its features (with the preprocessing's figures) and its TorchScript."""
    import numpy as np
    import torch
    from flights_hand_train import Features

    pre = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
    features = Features(
        pre["categorical"],
        pre["numeric"],
        {c: tuple(v) for c, v in pre["vocabularies"].items()},
        np.array(pre["mean"]),
        np.array(pre["std"]),
        np.array(pre["fill"]),
    )
    return features, torch.jit.load(str(folder / "model.pt"))


def score_saved(model: Path, data: Path) -> tuple[float, dict[str, Any], float]:
    """The saved model on the test split, from raw records; an example record and its score."""
    import pandas as pd
    import torch
    from baseline import LABEL, roc_auc
    from flights_hand_train import encode

    features, net = load_model(model)
    test = pd.read_parquet(data / "test", columns=features.columns)
    codes, numbers = encode(features, test)
    with torch.inference_mode():
        p = net(codes, numbers).to(torch.float64).numpy()
    record = {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in test.iloc[0].drop(LABEL).items()
    }
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
    return roc_auc(test[LABEL].to_numpy(), p), record, float(p[0])


def mllib_logistic(spark: Any, data: Path, features: list[str], fills: dict[str, float]) -> float:
    """MLlib's logistic regression as the evaluate step trains it: 100,000 sampled train rows,
    categoricals indexed, numbers filled, scaled; its test AUC."""
    from baseline import roc_auc
    from flights_hand_train import CATEGORICAL
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    cats = [c for c in features if c in CATEGORICAL]
    nums = [c for c in features if c not in CATEGORICAL]
    train = spark.read.parquet(str(data / "train")).select(*features, "delayed").na.fill(fills)
    total = train.count()
    train = train.sample(fraction=min(1.0, 1.05 * 100_000 / total), seed=0)
    train = train.withColumn("delayed", F.col("delayed").cast("double")).cache()
    test = spark.read.parquet(str(data / "test")).select(*features, "delayed").na.fill(fills)
    stages = [
        StringIndexer(inputCols=cats, outputCols=[f"{c}__i" for c in cats], handleInvalid="keep"),
        VectorAssembler(inputCols=[f"{c}__i" for c in cats] + nums, outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features"),
        LogisticRegression(featuresCol="features", labelCol="delayed", maxIter=50),
    ]
    try:
        fitted = Pipeline(stages=stages).fit(train)
        table = (
            fitted.transform(test)
            .select("delayed", vector_to_array(F.col("probability"))[1].alias("p"))
            .toArrow()
        )
    finally:
        train.unpersist()
    return roc_auc(table["delayed"].to_numpy(), table["p"].to_numpy())


# --- 5. serve ---------------------------------------------------------------------------------


def serve_main(model: str, port: int) -> None:
    """The server: FastAPI + uvicorn, POST /predict with {"records": [...]}."""
    import pandas as pd
    import torch
    import uvicorn
    from fastapi import FastAPI
    from flights_hand_train import encode

    features, net = load_model(Path(model))
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        frame = pd.DataFrame(body["records"])
        for c in features.numeric:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
        codes, numbers = encode(features, frame)
        with torch.inference_mode():
            p = net(codes, numbers).tolist()
        return {"probability": p}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_once(model: Path, record: dict[str, Any]) -> float:
    port = free_port()
    argv = [sys.executable, str(HANDBUILT), "serve", str(model), "--port", str(port)]
    child = subprocess.Popen(argv)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start (exit {child.poll()})") from None
                time.sleep(0.05)
        body = json.dumps({"records": [record]}).encode()
        request = urllib.request.Request(
            f"{url}/predict", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return float(json.loads(answer.read())["probability"][0])
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
