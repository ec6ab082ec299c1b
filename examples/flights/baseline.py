"""The baseline for the flights model: gradient-boosted trees (scikit-learn) on the same features.

    python baseline.py [--data DIR] [--out baseline.json]

It fits ``HistGradientBoostingClassifier`` on the train split, with the six categorical columns as
native categories (their codes from the manifest) and the numeric ones as they are (NaN is a
value the trees route), and scores the validation and test splits. The result is a JSON object
that ``train.py --baseline-result FILE`` can print beside the network's test AUC instead of
fitting it again.

This file also holds what both models share: which columns are features, how a split is read
in full, the metrics (ROC AUC with ties counted half, mean log loss) and where the dataset is.
It imports no deep-learning framework.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import cauce.data

HERE = Path(__file__).resolve().parent
#: Where ``cauce prepare`` writes the dataset when run from the repository's root, as the README
#: says; ``--data`` or ``$FLIGHTS_DATA`` point elsewhere.
DEFAULT_DATA = HERE.parent.parent / "data" / "flights"
LABEL = "delayed"
#: Columns that are not features: ``month`` is constant within the validation and test splits
#: (the splits are by month) and outside the training range; ``flight`` is an identifier.
EXCLUDED = ("month", "flight")

Floats = npt.NDArray[np.float64]


def default_data() -> str:
    return os.environ.get("FLIGHTS_DATA") or str(DEFAULT_DATA)


def open_dataset(data: str) -> cauce.data.Manifest:
    """The manifest of the prepared dataset, or SystemExit naming the command that makes it."""
    try:
        return cauce.data.read_manifest(data)
    except cauce.data.DataError as exc:
        out = "data/flights" if Path(data).resolve() == DEFAULT_DATA else data
        raise SystemExit(
            f"error: no prepared flights dataset at {data} ({exc}).\n"
            "Prepare it first, from the repository's root:\n"
            f"    cauce prepare examples/flights/features.py:build --out {out}"
        ) from None


def feature_columns(manifest: cauce.data.Manifest) -> tuple[list[str], list[str]]:
    """``(categorical, numeric)`` feature columns, in the dataset's column order."""
    categorical = [c for c in manifest.columns if c in manifest.vocabularies]
    numeric = [
        c
        for c in manifest.columns
        if c not in manifest.vocabularies and c != LABEL and c not in EXCLUDED
    ]
    return categorical, numeric


def read_split(
    manifest: cauce.data.Manifest, split: str, columns: list[str]
) -> dict[str, npt.NDArray[Any]]:
    """A whole split as NumPy columns (categorical ones as codes), read by this process alone."""
    parts: dict[str, list[npt.NDArray[Any]]] = {c: [] for c in columns}
    batches = cauce.data.shard(
        manifest, split, batch_size=65_536, columns=columns, rank=0, world_size=1
    )
    for batch in batches:
        for name in columns:
            parts[name].append(batch[name])
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def roc_auc(labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float:
    """Area under the ROC curve: the chance that a positive outscores a negative (ties: half)."""
    y = np.asarray(labels).astype(bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    # the average rank (from 1) of each distinct score, then of each row
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(labels: npt.NDArray[Any], probabilities: npt.NDArray[Any]) -> float:
    """Mean binary cross-entropy, in nats, with probabilities clipped to [1e-7, 1 - 1e-7]."""
    y = np.asarray(labels).astype(np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1.0 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _matrix(columns: dict[str, npt.NDArray[Any]], names: list[str]) -> Floats:
    return np.column_stack([columns[n].astype(np.float64) for n in names])


def fit_baseline(
    data: str,
    *,
    max_iter: int = 100,
    learning_rate: float = 0.1,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Fit the trees on train; returns their validation and test metrics as a JSON-able dict.

    The trees are grown 25 at a time (``warm_start``), calling ``progress`` in between: under
    ``cauce run`` with ``hang_timeout`` that is ``cauce.heartbeat``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    manifest = open_dataset(data)
    categorical, numeric = feature_columns(manifest)
    features = categorical + numeric
    splits = {
        s: read_split(manifest, s, [*features, LABEL]) for s in ("train", "validation", "test")
    }
    started = time.perf_counter()
    chunk = 25
    model = HistGradientBoostingClassifier(
        max_iter=min(chunk, max_iter),
        learning_rate=learning_rate,
        early_stopping=False,
        categorical_features=[True] * len(categorical) + [False] * len(numeric),
        warm_start=True,
        random_state=0,
    )
    x_train = _matrix(splits["train"], features)
    for trees in [*range(chunk, max_iter, chunk), max_iter]:
        model.set_params(max_iter=trees)
        model.fit(x_train, splits["train"][LABEL])
        if progress is not None:
            progress()
    result: dict[str, Any] = {
        "model": "HistGradientBoostingClassifier",
        "params": {"max_iter": max_iter, "learning_rate": learning_rate},
        "dataset": manifest.content_hash,
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    for split, short in (("validation", "val"), ("test", "test")):
        p = model.predict_proba(_matrix(splits[split], features))[:, 1]
        y = splits[split][LABEL]
        result[f"{short}_auc"] = roc_auc(y, p)
        result[f"{short}_logloss"] = log_loss(y, p)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", default=default_data(), help="the prepared dataset")
    parser.add_argument("--out", help="write the result here as JSON")
    parser.add_argument("--max-iter", type=int, default=100, help="trees (default 100)")
    args = parser.parse_args()
    result = fit_baseline(args.data, max_iter=args.max_iter)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"baseline {result['model']}: validation AUC {result['val_auc']:.4f}, "
        f"test AUC {result['test_auc']:.4f} (fit in {result['fit_seconds']:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
