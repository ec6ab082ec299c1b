"""MLlib baselines of the ``evaluate`` step (``baselines: [mllib_gbt]``): Spark's own
classifiers trained on the same prepared dataset, on the same Spark cluster as the pipeline
(``--cluster spark://...``) or on ``local[2]`` here, and scored on the same split as the model.

Features are the model's raw features (its preprocessing says which): categorical ones indexed
by ``StringIndexer`` (unseen values to an extra index), numeric ones with nulls filled by the
model's own fill values. Test probabilities come back to the driver, where the evaluate step's
AUC code measures them against the same labels: one AUC for every contender.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cauce.data.api import Manifest
from cauce.serve.api import Preprocessing

__all__ = ["BASELINES", "BaselineScores", "mllib_scores"]

log = logging.getLogger(__name__)

#: The baselines by the name an ``evaluate`` step lists them under, with their summary label.
BASELINES = {
    "mllib_gbt": "MLlib gradient-boosted trees",
    "mllib_logistic": "MLlib logistic regression",
}


@dataclass(frozen=True)
class BaselineScores:
    """One baseline's probabilities of the positive class on the test split, by row order of
    the split's files, with the labels read beside them; ``seconds`` to train and score."""

    name: str
    labels: Any  # NumPy float64
    scores: Any  # NumPy float64
    train_rows: int
    seconds: float


def _uris(manifest: Manifest, split: str) -> list[str]:
    from cauce.data import resolve
    from cauce.serve import hadoop_uri

    fs = resolve(manifest.root)
    return [hadoop_uri(fs, fs.join(f.path)) for f in manifest.split(split).files]


def _frame(session: Any, manifest: Manifest, split: str, columns: list[str]) -> Any:
    """A split as a Spark DataFrame. On shared storage (``s3://``, ...) it is read on the driver
    through fsspec: Spark's ``s3a`` needs the hadoop-aws jar, which pyspark does not ship."""
    from cauce._util.remote import is_uri

    if not is_uri(manifest.root):
        return session.read.parquet(*_uris(manifest, split)).select(*columns)
    import pyarrow.parquet as pq

    from cauce.data import resolve

    fs = resolve(manifest.root)
    paths = [fs.join(f.path) for f in manifest.split(split).files]
    table = pq.ParquetDataset(paths, filesystem=fs.fs).read(columns=columns)
    return session.createDataFrame(table.to_pandas())


def _stages(kind: str, pre: Preprocessing, label: str, max_bins: int) -> list[Any]:
    from pyspark.ml.classification import GBTClassifier, LogisticRegression
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    cats = [c.name for c in pre.categorical]
    indexed = [f"{c}__index" for c in cats]
    stages: list[Any] = []
    if cats:
        stages.append(StringIndexer(inputCols=cats, outputCols=indexed, handleInvalid="keep"))
    assembler = VectorAssembler(
        inputCols=indexed + [n.name for n in pre.numeric], outputCol="features_raw"
    )
    stages.append(assembler)
    if kind == "mllib_gbt":
        stages.append(
            GBTClassifier(
                featuresCol="features_raw",
                labelCol=label,
                maxIter=20,
                maxDepth=5,
                maxBins=max_bins,
                seed=0,
            )
        )
    else:
        stages.append(StandardScaler(inputCol="features_raw", outputCol="features"))
        stages.append(LogisticRegression(featuresCol="features", labelCol=label, maxIter=50))
    return stages


def mllib_scores(
    session: Any,
    manifest: Manifest,
    pre: Preprocessing,
    label: str,
    kinds: Sequence[str],
    *,
    train_split: str = "train",
    test_split: str = "test",
    max_train_rows: int = 100_000,
) -> list[BaselineScores]:
    """Train each of ``kinds`` on ``train_split`` (a seeded sample of at most
    ``max_train_rows`` rows) and score ``test_split``."""
    import numpy as np
    from pyspark.ml import Pipeline
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    fills = {n.name: float(n.fill_value) for n in pre.numeric}
    columns = [*pre.features, label]
    train = _frame(session, manifest, train_split, columns).na.fill(fills)
    total = manifest.split(train_split).rows
    if total > max_train_rows:
        train = train.sample(fraction=min(1.0, 1.05 * max_train_rows / total), seed=0)
    train = train.withColumn(label, F.col(label).cast("double")).cache()
    test = _frame(session, manifest, test_split, columns).na.fill(fills)
    test = test.withColumn(label, F.col(label).cast("double"))
    # Trees need a bin per category: the train split's distinct values (the manifest's
    # vocabularies) and one for the values it has not seen.
    sizes = [len(manifest.vocabularies.get(c.name, c.vocabulary)) + 2 for c in pre.categorical]
    max_bins = max([32, *sizes])
    found = []
    try:
        rows = train.count()
        for kind in kinds:
            began = time.monotonic()
            fitted = Pipeline(stages=_stages(kind, pre, label, max_bins)).fit(train)
            scored = fitted.transform(test).select(
                F.col(label), vector_to_array(F.col("probability"))[1].alias("p")
            )
            table: Any = scored.toArrow()  # toPandas warns on pandas 3
            found.append(
                BaselineScores(
                    BASELINES[kind],
                    table[label].to_numpy().astype(np.float64),
                    table["p"].to_numpy().astype(np.float64),
                    rows,
                    time.monotonic() - began,
                )
            )
            log.info("%s: trained on %d rows and scored in %.1f s", kind, rows, found[-1].seconds)
    finally:
        train.unpersist()
    return found
