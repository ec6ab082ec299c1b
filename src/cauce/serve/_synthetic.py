"""Synthetic models shaped like the flights model, for tests, docs and benchmarks.

``flights``: embeddings of 6 categorical features and 9 numeric features into a small MLP
(well under a millisecond per request). ``heavy``: the same inputs into a wide MLP (4 layers of
3000, 108 MB of weights), about 2 ms for one sample on two cores and a tenth of that per sample
in a batch of 64: where batching pays. Weights are random but
seeded, so two saves with the same seed give the same predictions.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cauce.serve._format import save_model
from cauce.serve.api import CategoricalFeature, NumericFeature, Preprocessing, TensorSpec

__all__ = ["FlightsNet", "save_synthetic", "synthetic_records"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


VOCABULARIES: dict[str, tuple[str, ...]] = {
    "carrier": _words("9E AA AS B6 DL EV F9 FL HA MQ OO UA US VX WN YV"),
    "origin": ("EWR", "JFK", "LGA"),
    "dest": _words(
        "ATL BOS BUF CLT DCA DEN DFW DTW FLL IAD LAX MCO MIA MSP ORD PBI RDU SFO SJU TPA"
    ),
    "plane_type": ("Fixed wing multi engine", "Fixed wing single engine", "Rotorcraft"),
    "plane_manufacturer": ("AIRBUS", "BOEING", "BOMBARDIER INC", "EMBRAER", "MCDONNELL DOUGLAS"),
    "plane_engine": ("Turbo-fan", "Turbo-jet", "Turbo-prop", "Reciprocating"),
}

#: (name, mean, std) of the numeric features, roughly those of the 2013 flights.
NUMERIC: tuple[tuple[str, float, float], ...] = (
    ("month", 6.5, 3.4),
    ("hour", 13.1, 4.7),
    ("sched_dep_min", 810.0, 285.0),
    ("distance", 1040.0, 730.0),
    ("plane_age", 15.8, 7.7),
    ("wx_temp", 56.9, 17.8),
    ("wx_wind_speed", 10.5, 5.6),
    ("wx_precip", 0.005, 0.04),
    ("wx_visib", 9.3, 2.0),
)


class FlightsNet(nn.Module):
    """Embeddings of the categorical codes, concatenated with the numeric features, into an MLP."""

    def __init__(self, vocab_sizes: list[int], n_numeric: int, *, dim: int, width: int, depth: int):
        super().__init__()
        self.embeddings = nn.ModuleList([nn.Embedding(n + 1, dim) for n in vocab_sizes])
        layers: list[nn.Module] = []
        size = dim * len(vocab_sizes) + n_numeric
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        parts = [numeric]
        for i, embedding in enumerate(self.embeddings):
            parts.append(embedding(categorical[:, i]))
        return torch.sigmoid(self.mlp(torch.cat(parts, dim=1))).squeeze(1)


def preprocessing() -> Preprocessing:
    return Preprocessing(
        categorical=tuple(CategoricalFeature(n, v) for n, v in VOCABULARIES.items()),
        numeric=tuple(NumericFeature(n, mean, std) for n, mean, std in NUMERIC),
    )


def save_synthetic(path: str | Path, kind: str = "flights", *, seed: int = 0) -> Path:
    """Save the ``flights`` or ``heavy`` synthetic model to directory ``path``."""
    sizes = {"flights": (8, 64, 2), "heavy": (16, 3000, 4)}
    if kind not in sizes:
        raise ValueError(f"kind must be one of {sorted(sizes)}, got {kind!r}")
    dim, width, depth = sizes[kind]
    torch.manual_seed(seed)
    vocab_sizes = [len(v) for v in VOCABULARIES.values()]
    net = FlightsNet(vocab_sizes, len(NUMERIC), dim=dim, width=width, depth=depth)
    saved = save_model(
        path,
        net,
        name=f"{kind}-synthetic",
        inputs=[
            TensorSpec("categorical", "INT64", (-1, len(VOCABULARIES))),
            TensorSpec("numeric", "FP32", (-1, len(NUMERIC))),
        ],
        outputs=[TensorSpec("probability", "FP32", (-1,))],
        preprocessing=preprocessing(),
        lineage={"synthetic": kind, "seed": seed},
    )
    return Path(saved)  # a local folder: the tests' and benchmarks' models


def synthetic_records(n: int, *, seed: int = 0, unknown: float = 0.05) -> list[dict[str, Any]]:
    """``n`` raw records; about ``unknown`` of the values are unseen categories or nulls."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        rec: dict[str, Any] = {}
        for name, vocab in VOCABULARIES.items():
            r = rng.random()
            rec[name] = None if r < unknown / 2 else "ZZZ" if r < unknown else rng.choice(vocab)
        for name, mean, std in NUMERIC:
            rec[name] = None if rng.random() < unknown / 2 else round(rng.gauss(mean, std), 3)
        records.append(rec)
    return records
