"""The hand-built stack's training function (benchmarks/pipeline.py): what runs inside each rank
of a ``TorchDistributor(local_mode=True)`` run, for a tuning trial or the final training.

The network, the weight average, the feature arithmetic, the cross-rank helpers and the metrics
are imported from ``examples/flights/train.py`` and ``baseline.py`` (the loop below is
``train.py``'s ``train_epoch`` and ``validate``); the data are read the way a practitioner
would: each split's Parquet folder (written by Spark) into pandas with pyarrow, then into
tensors once. A trial's rank 0 loads the Optuna study from its RDB storage by name and trial
number, reports each epoch and asks ``should_prune``; the ranks agree on stopping through a
broadcast. Needs ``examples/flights`` and this folder on ``PYTHONPATH`` (the driver sets it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from baseline import LABEL, log_loss, roc_auc
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def _flights_train() -> Any:
    """examples/flights/train.py, as the module ``flights_train``: under TorchDistributor the
    name ``train`` is its own generated script."""
    if "flights_train" not in sys.modules:
        path = Path(__file__).resolve().parent.parent.parent / "examples" / "flights" / "train.py"
        spec = importlib.util.spec_from_file_location("flights_train", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["flights_train"] = module
        spec.loader.exec_module(module)
    return sys.modules["flights_train"]


_train = _flights_train()
DEFAULTS: dict[str, Any] = _train.DEFAULTS
FILL = _train.FILL
Features = _train.Features
FlightsNet = _train.FlightsNet
Probability = _train.Probability
WeightAverage = _train.WeightAverage
gather_rows = _train.gather_rows
mean_over_ranks = _train.mean_over_ranks
rng_states = _train.rng_states

#: The categorical columns of examples/flights/features.py, and the columns that are not
#: features (as in baseline.py).
CATEGORICAL = ("carrier", "origin", "dest", "plane_type", "plane_manufacturer", "plane_engine")
EXCLUDED = ("month", "flight")


@dataclass
class Split:
    codes: torch.Tensor  # [n, categorical] int64, 0 = unknown
    numbers: torch.Tensor  # [n, numeric] fp32, standardised
    labels: torch.Tensor  # [n] fp32


def columns_of(data: str) -> tuple[list[str], list[str]]:
    names = pq.read_schema(next(Path(data, "train").glob("*.parquet"))).names
    categorical = [c for c in names if c in CATEGORICAL]
    numeric = [c for c in names if c not in CATEGORICAL and c != LABEL and c not in EXCLUDED]
    return categorical, numeric


def read(data: str, split: str, columns: list[str]) -> Any:
    return pq.read_table(Path(data, split), columns=columns).to_pandas()


def fit_features(data: str, bins: int) -> tuple[Features, torch.Tensor]:
    """Vocabularies (sorted distinct values of train), mean, std, fills and quantile edges of
    train: what train.py's ``features_of`` computes from cauce's manifest."""
    categorical, numeric = columns_of(data)
    train = read(data, "train", [*categorical, *numeric])
    vocabularies = {c: tuple(sorted(train[c].dropna().unique().tolist())) for c in categorical}
    raw = train[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    mean = np.nanmean(raw, axis=0)
    std = np.nanstd(raw, axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    fill = np.array([FILL.get(c, m) for c, m in zip(numeric, mean, strict=True)])
    features = Features(categorical, numeric, vocabularies, mean, std, fill)
    known = (raw - mean) / std
    edges = np.nanquantile(known, np.linspace(0.0, 1.0, bins + 1), axis=0).T
    return features, torch.tensor(edges, dtype=torch.float32)


def encode(features: Features, frame: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw columns (a pandas frame) to the model's inputs: codes and standardised numbers."""
    import pandas as pd

    codes = np.column_stack(
        [
            pd.Categorical(frame[c], categories=list(features.vocabularies[c])).codes + 1
            for c in features.categorical
        ]
    ).astype(np.int64)
    raw = frame[features.numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = features.scale(raw).astype(np.float32)
    return torch.from_numpy(codes), torch.from_numpy(numbers)


def load(data: str, split: str, features: Features, rank: int, size: int) -> Split:
    """This rank's rows of a split (every ``size``-th row), the same count on every rank."""
    frame = read(data, split, features.columns)
    count = len(frame) // size
    frame = frame.iloc[rank::size].iloc[:count]
    codes, numbers = encode(features, frame)
    labels = torch.from_numpy(frame[LABEL].to_numpy(dtype=np.float32))
    return Split(codes, numbers, labels)


def train_epoch(
    model: nn.Module,
    net: FlightsNet,
    average: WeightAverage | None,
    optimizer: torch.optim.Optimizer,
    *,
    data: Split,
    hp: dict[str, Any],
    epoch: int,
    seed: int,
) -> float:
    model.train()
    rows = len(data.labels)
    size = hp["batch_size"]
    steps = -(-rows // size)
    total_steps = hp["epochs"] * steps
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    loss_sum = torch.zeros((), dtype=torch.float64)
    for step in range(steps):
        index = order[step * size : (step + 1) * size]
        for group in optimizer.param_groups:
            group["lr"] = hp["lr"] * (1.0 - (epoch * steps + step) / total_steps)
        labels = data.labels[index]
        loss = nn.functional.binary_cross_entropy_with_logits(
            model(data.codes[index], data.numbers[index]), labels
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update(net)
        loss_sum += loss.detach() * len(labels)
    return mean_over_ranks(float(loss_sum) / rows)


def validate(net: nn.Module, data: Split) -> dict[str, float]:
    net.eval()
    with torch.inference_mode():
        parts = [
            torch.sigmoid(net(data.codes[i : i + 8192], data.numbers[i : i + 8192]))
            for i in range(0, len(data.labels), 8192)
        ]
    p = gather_rows(torch.cat(parts).to(torch.float64).numpy())
    y = gather_rows(data.labels.to(torch.float64).numpy())
    return {"val_auc": roc_auc(y, p), "val_logloss": log_loss(y, p)}


def save_checkpoint(folder: Path, state: dict[str, Any], epoch: int, rank: int) -> None:
    state["rng"] = rng_states()  # a collective
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".epoch-{epoch}.pt"
        torch.save(state, tmp)
        os.replace(tmp, folder / f"epoch-{epoch}.pt")
    dist.barrier()


def pruning(study_name: str, storage: str, number: int, pruner: dict[str, int]) -> Any:
    """This trial of the study, loaded from its storage (rank 0 only)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=study_name,
        storage=optuna.storages.RDBStorage(
            storage, engine_kwargs={"connect_args": {"timeout": 60}}
        ),
        pruner=optuna.pruners.SuccessiveHalvingPruner(**pruner),
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def run(
    data: str,
    hp: dict[str, Any],
    out: str,
    *,
    seed: int = 0,
    trial: dict[str, Any] | None = None,
    baseline: bool = False,
) -> dict[str, Any]:
    """One training run on this rank; rank 0's return value is what ``TorchDistributor.run``
    returns. ``trial`` (study, storage, number, pruner) makes it a tuning trial."""
    began, started_at = time.perf_counter(), time.time()
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    features, edges = fit_features(data, hp["bins"])
    train, validation = (load(data, s, features, rank, size) for s in ("train", "validation"))
    loaded = time.perf_counter() - began
    cardinalities = [len(features.vocabularies[c]) + 1 for c in features.categorical]
    torch.manual_seed(seed)
    net = FlightsNet(
        cardinalities, edges, emb_dim=hp["emb_dim"], hidden=hp["hidden"], dropout=hp["dropout"]
    )
    model = DistributedDataParallel(net)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    average = None
    if hp["average"] > 0:
        steps = hp["epochs"] * -(-len(train.labels) // hp["batch_size"])
        average = WeightAverage(net, decay=1.0 - 1.0 / max(1.0, hp["average"] * steps))
    torch.manual_seed(seed * 1_000 + 1 + rank)
    final = average.net if average is not None else net
    optuna_trial = pruning(**trial) if trial is not None and rank == 0 else None
    metrics: dict[str, float] = {}
    result: dict[str, Any] = {"pruned_at": None, "epochs": []}
    for epoch in range(hp["epochs"]):
        started = time.perf_counter()
        loss = train_epoch(
            model, net, average, optimizer, data=train, hp=hp, epoch=epoch, seed=seed
        )
        metrics = validate(final, validation)
        state = {
            "model": net.state_dict(),
            "average": final.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "metrics": metrics,
            "hyperparameters": hp,
        }
        save_checkpoint(Path(out, "checkpoints"), state, epoch, rank)
        result["epochs"].append({"loss": loss, **metrics, "seconds": time.perf_counter() - started})
        stop = torch.zeros(1, dtype=torch.int64)
        if optuna_trial is not None:
            optuna_trial.report(metrics["val_auc"], epoch)
            stop[0] = int(optuna_trial.should_prune())
        if trial is not None:
            dist.broadcast(stop, src=0)  # the ranks agree on stopping
        if stop.item():
            result["pruned_at"] = epoch
            break
    result.update(metrics, load_seconds=loaded)
    if baseline:
        # as train.py: the last rank fits the trees while rank 0 saves and tests the network
        fitted = [fit_trees(data, features) if rank == size - 1 else None]
        if rank == 0:
            result.update(save_and_test(data, final, features, out))
        dist.broadcast_object_list(fitted, src=size - 1)
        result["baseline"] = fitted[0]
    # TorchDistributor keeps the result of whichever rank writes last: every rank returns
    # rank 0's
    result.update(started_at=started_at, ended_at=time.time())
    box = [result]
    dist.broadcast_object_list(box, src=0)
    del model  # before the group: see leave_process_group in examples/flights/train.py
    dist.destroy_process_group()
    return dict(box[0])


def save_and_test(data: str, net: FlightsNet, features: Features, out: str) -> dict[str, Any]:
    """The served form (TorchScript) and its preprocessing, saved; the test AUC of the saved
    model."""
    folder = Path(out, "model")
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Probability(net).eval()).save(str(folder / "model.pt"))
    pre = {
        "categorical": features.categorical,
        "numeric": features.numeric,
        "vocabularies": {c: list(v) for c, v in features.vocabularies.items()},
        "mean": features.mean.tolist(),
        "std": features.std.tolist(),
        "fill": features.fill.tolist(),
    }
    (folder / "preprocessing.json").write_text(json.dumps(pre), encoding="utf-8")
    served = torch.jit.load(str(folder / "model.pt"))
    test = read(data, "test", features.columns)
    codes, numbers = encode(features, test)
    with torch.inference_mode():
        p = served(codes, numbers).to(torch.float64).numpy()
    return {"model": str(folder), "test_auc": roc_auc(test[LABEL].to_numpy(), p)}


def fit_trees(data: str, features: Features) -> dict[str, Any]:
    """baseline.py's gradient-boosted trees (the same settings), on the hand-built splits."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    def matrix(frame: Any) -> Any:
        codes, _ = encode(features, frame)
        raw = frame[features.numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.column_stack([codes.numpy().astype(np.float64), raw])

    splits = {s: read(data, s, features.columns) for s in ("train", "validation", "test")}
    model = HistGradientBoostingClassifier(
        max_iter=25,
        learning_rate=0.1,
        early_stopping=False,
        categorical_features=[True] * len(features.categorical) + [False] * len(features.numeric),
        warm_start=True,
        random_state=0,
    )
    x = matrix(splits["train"])
    for trees in (25, 50, 75, 100):
        model.set_params(max_iter=trees)
        model.fit(x, splits["train"][LABEL])
    p = model.predict_proba(matrix(splits["test"]))[:, 1]
    return {
        "model": "HistGradientBoostingClassifier",
        "test_auc": roc_auc(splits["test"][LABEL], p),
    }
