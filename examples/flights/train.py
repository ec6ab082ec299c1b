"""Will a New York flight arrive more than 15 minutes late? A network trained with PyTorch DDP.

    cauce run examples/flights/train.yaml        # 2 ranks, DDP over Gloo (see train.yaml)
    torchrun --standalone --nproc-per-node 2 examples/flights/train.py
    python examples/flights/train.py             # one process, no DDP

The dataset comes from ``cauce prepare examples/flights/features.py:build --out data/flights``.
Each categorical column gets an embedding; each numeric column is standardised with the train
split's mean and standard deviation (a missing value becomes 0, the mean; a missing gust, 0 mph)
and also encoded piecewise-linearly over its quantile bins; all of it feeds an MLP, trained with
AdamW. What is validated and saved is a moving average of the trained weights.

Each rank reads its own part of the train split (``cauce.data.shard``, the same number of
batches on every rank). After each epoch the ranks score their parts of the validation split,
gather the scores and report the validation AUC and log loss with ``cauce.report``; rank 0 then
saves a checkpoint (model, averaged model, optimizer, epoch and every rank's RNG state). A
restarted gang resumes from the latest checkpoint. At the end rank 0 saves the model for ``cauce
serve`` (with its preprocessing and lineage) and scores the test split with the saved model,
while the last rank fits the scikit-learn baseline of ``baseline.py``; rank 0 prints both test
AUCs.

Hyperparameters (``--lr``, ``--hidden``, ``--emb-dim``, ``--dropout``, ``--batch-size``,
``--epochs``, ``--bins``, ``--weight-decay``, ``--average``) come from the command line;
``cauce.context().params`` (set by ``cauce tune``) override them.
"""

# No `from __future__ import annotations`: TorchScript reads FlightsNet's annotations itself.
import argparse
import contextlib
import copy
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import cauce
import cauce.data
import cauce.serve

# isort: split
from baseline import (  # beside this file
    LABEL,
    default_data,
    feature_columns,
    fit_baseline,
    log_loss,
    open_dataset,
    read_split,
    roc_auc,
)

#: Hyperparameters and their defaults; ``cauce.context().params`` may set any of them.
DEFAULTS: dict[str, float | int] = {
    "lr": 5e-3,  # AdamW's, at the first step; it decays linearly to 0 at the last
    "hidden": 64,  # units of each of the two hidden layers
    "emb_dim": 8,  # per categorical column
    "dropout": 0.1,
    "batch_size": 1024,  # rows per step on each rank
    "epochs": 8,
    "bins": 16,  # quantile bins of each numeric column's piecewise-linear encoding
    "weight_decay": 0.01,  # AdamW's decoupled weight decay
    # The weights validated, checkpointed and saved are an exponential moving average of the
    # trained ones, with a horizon of this fraction of the run's steps (decay 1 - 1/(average *
    # steps)), starting from the initial weights; 0 uses the trained weights as they are.
    "average": 1.0,
}
#: Fill values of missing numbers, in the column's units; the others get the train mean. The
#: weather stations report a gust only when there is one: a missing gust is none.
FILL = {"wx_wind_gust": 0.0}
HEARTBEAT_EVERY = 50  # training steps between two cauce.heartbeat() calls


@dataclass(frozen=True)
class Features:
    """The feature columns and how raw values become the model's two inputs."""

    categorical: list[str]
    numeric: list[str]
    vocabularies: dict[str, tuple[str | int, ...]]
    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    fill: npt.NDArray[np.float64]  # in the columns' units

    @property
    def columns(self) -> list[str]:
        return [*self.categorical, *self.numeric, LABEL]

    def scale(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``[n, numeric]`` raw numbers (NaN: missing) to what the model takes, in float64."""
        return (np.where(np.isnan(raw), self.fill, raw) - self.mean) / self.std

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[n, categorical]`` (int64) and standardised numbers ``[n, numeric]`` (fp32).

        The arithmetic of the served model's preprocessing (``cauce.serve.Preprocessing``): a
        missing number becomes its fill value, then ``(x - mean) / std`` in float64, then fp32.
        """
        codes = torch.stack([batch[c] for c in self.categorical], dim=1)
        raw = torch.stack([batch[c].to(torch.float64) for c in self.numeric], dim=1)
        return codes, torch.from_numpy(self.scale(raw.numpy())).to(torch.float32)

    def preprocessing(self) -> cauce.serve.Preprocessing:
        return cauce.serve.Preprocessing(
            categorical=tuple(
                cauce.serve.CategoricalFeature(c, self.vocabularies[c]) for c in self.categorical
            ),
            numeric=tuple(
                cauce.serve.NumericFeature(c, mean=float(m), std=float(s), fill=float(f))
                for c, m, s, f in zip(self.numeric, self.mean, self.std, self.fill, strict=True)
            ),
        )


def features_of(manifest: cauce.data.Manifest, bins: int) -> tuple[Features, torch.Tensor]:
    """The features, with the mean and std of each numeric column over train, and the edges
    ``[numeric, bins + 1]`` of its quantile bins (of its known values, standardised)."""
    categorical, numeric = feature_columns(manifest)
    train = read_split(manifest, "train", numeric)
    raw = np.column_stack([train[c].astype(np.float64) for c in numeric])
    mean = np.nanmean(raw, axis=0)
    std = np.nanstd(raw, axis=0)
    std = np.where(std > 1e-9, std, 1.0)  # a constant column: leave it unscaled
    fill = np.array([FILL.get(c, m) for c, m in zip(numeric, mean, strict=True)])
    vocabularies = {c: tuple(manifest.vocabularies[c]) for c in categorical}
    features = Features(categorical, numeric, vocabularies, mean, std, fill)
    known = (raw - mean) / std  # NaN stays NaN: nanquantile leaves it out
    edges = np.nanquantile(known, np.linspace(0.0, 1.0, bins + 1), axis=0).T
    return features, torch.tensor(edges, dtype=torch.float32)


class FlightsNet(nn.Module):
    """An MLP over embeddings of the categorical codes (0 = unknown) and the numbers.

    Each number enters as itself and as a piecewise-linear encoding over its quantile bins
    (bin ``t`` is 0 below it, 1 above it, linear inside), which lets an MLP cut a feature at
    thresholds the way trees do. Returns one logit per row. The categorical columns share one
    embedding table, each with its own rows.
    """

    offsets: torch.Tensor  # where each column's rows start in the table
    left: torch.Tensor  # [numeric, bins] lower edges of the bins, standardised
    width: torch.Tensor  # [numeric, bins]

    def __init__(
        self,
        cardinalities: list[int],
        edges: torch.Tensor,
        *,
        emb_dim: int,
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]])
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64))
        self.register_buffer("left", edges[:, :-1].clone())
        self.register_buffer("width", (edges[:, 1:] - edges[:, :-1]).clamp_min(1e-6))
        self.embedding = nn.Embedding(int(sum(cardinalities)), emb_dim)
        numeric, bins = self.left.shape
        self.mlp = nn.Sequential(
            nn.Linear(len(cardinalities) * emb_dim + numeric * (1 + bins), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(categorical + self.offsets).flatten(1)
        encoded = ((numeric.unsqueeze(2) - self.left) / self.width).clamp(0.0, 1.0).flatten(1)
        logits: torch.Tensor = self.mlp(torch.cat([embedded, numeric, encoded], dim=1))
        return logits.squeeze(1)


class WeightAverage:
    """An exponential moving average of a net's weights: after each step, each averaged weight
    moves ``1 - decay`` of the way to the trained one. It starts at the initial weights, whose
    share fades as ``decay ** steps``: with a horizon of the whole run, about a third is left at
    the end, which shrinks the model towards its small initial weights (on this data, a
    steadier validation AUC than the trained weights, or an average that forgets the start)."""

    def __init__(self, net: FlightsNet, decay: float) -> None:
        self.net = copy.deepcopy(net)
        self.decay = decay

    @torch.no_grad()
    def update(self, trained: FlightsNet) -> None:
        for mine, theirs in zip(self.net.parameters(), trained.parameters(), strict=True):
            mine.lerp_(theirs, 1.0 - self.decay)


class Probability(nn.Module):
    """The served form: the probability of a delay, ``[n]`` fp32."""

    def __init__(self, net: FlightsNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(categorical, numeric))


class _SmallSplits(logging.Filter):
    """Drops cauce.data's warning that a split has fewer row groups than there are ranks: the
    validation and test splits are one row group each, which the ranks share by rows (as they
    should); the warning would come at every epoch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "row groups for %d ranks" not in str(record.msg)


# --- across ranks -----------------------------------------------------------------------------


def world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(local: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Every rank's rows, in rank order, on every rank (ranks may hold different counts)."""
    if not dist.is_initialized():
        return local
    _, size = world()
    count = torch.tensor([len(local)], dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    most = int(max(c.item() for c in counts))
    padded = torch.zeros(most, dtype=torch.float64)
    padded[: len(local)] = torch.from_numpy(local)
    parts = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return np.concatenate([p[: int(c.item())].numpy() for p, c in zip(parts, counts, strict=True)])


def mean_over_ranks(value: float) -> float:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world()[1]


def rng_states() -> list[torch.Tensor]:
    """Every rank's torch RNG state (dropout), in rank order."""
    state = torch.get_rng_state()
    if not dist.is_initialized():
        return [state]
    states = [torch.empty_like(state) for _ in range(world()[1])]
    dist.all_gather(states, state)
    return states


def agreed_checkpoint() -> cauce.checkpoint.Checkpoint | None:
    """The latest complete checkpoint, the same one on every rank: rank 0 picks its step."""
    rank, _ = world()
    step = torch.tensor([-1], dtype=torch.int64)
    if rank == 0:
        latest = cauce.checkpoint.latest_step()
        step[0] = -1 if latest is None else latest
    if dist.is_initialized():
        dist.broadcast(step, src=0)
    return None if step.item() < 0 else cauce.checkpoint.load(step=int(step.item()))


@contextlib.contextmanager
def heartbeats(every: float = 5.0) -> Iterator[None]:
    """Heartbeats from a thread while this rank blocks on a peer that is busy on its own (the
    rank fitting the baseline): that peer's heartbeats, not these, tell whether it hangs, and a
    peer that dies breaks the collective, which then raises here."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            cauce.heartbeat()

    thread = threading.Thread(target=beat, name="heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def send_json(value: dict[str, Any], dst: int) -> None:
    data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
    dist.send(torch.tensor([len(data)], dtype=torch.int64), dst=dst)
    dist.send(data, dst=dst)


def receive_json(src: int) -> dict[str, Any]:
    size = torch.zeros(1, dtype=torch.int64)
    with heartbeats():
        dist.recv(size, src=src)
        data = torch.zeros(int(size.item()), dtype=torch.uint8)
        dist.recv(data, src=src)
    return dict(json.loads(bytes(data.numpy()).decode()))


# --- training -----------------------------------------------------------------------------------


@dataclass
class Run:
    """What the steps of a run share."""

    args: argparse.Namespace
    ctx: cauce.Context
    hp: dict[str, Any]
    manifest: cauce.data.Manifest
    features: Features
    net: FlightsNet  # the trained weights
    model: nn.Module  # the net, wrapped in DistributedDataParallel when there are several ranks
    average: WeightAverage | None  # None with --average 0
    optimizer: torch.optim.Optimizer
    rank: int
    size: int
    #: validation metrics of the last epoch done (by this attempt or, if none, by the checkpoint)
    metrics: dict[str, float]

    @property
    def final(self) -> FlightsNet:
        """The weights that are validated and saved."""
        return self.average.net if self.average is not None else self.net


def hyperparameters(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """The command line's values, overridden by the tuner's ``params``; unknown names refused."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise SystemExit(
            f"error: unknown hyperparameter {unknown[0]!r} in cauce.context().params; "
            f"known: {', '.join(DEFAULTS)}"
        )
    hp = {name: getattr(args, name) for name in DEFAULTS}
    for name, value in params.items():
        hp[name] = type(DEFAULTS[name])(value)
    return hp


def resume(run: Run) -> int:
    """Load the latest checkpoint, if any, on every rank; returns the first epoch to run."""
    latest = agreed_checkpoint()
    if latest is None:
        return 0
    state = latest.state
    made = (state["hyperparameters"], state["dataset"], len(state["rng"]))
    if made != (run.hp, run.manifest.content_hash, run.size):
        raise SystemExit(
            f"error: checkpoint {latest.path} was made with other hyperparameters, data or "
            f"ranks ({made[0]}, dataset {made[1][:16]}, {made[2]} ranks); this run has {run.hp}, "
            f"dataset {run.manifest.content_hash[:16]}, {run.size} ranks. Remove it, or set "
            "$CAUCE_RUN_DIR to another folder"
        )
    run.net.load_state_dict(state["model"])
    if run.average is not None:
        run.average.net.load_state_dict(state["average"])
    run.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"][run.rank])
    run.metrics = dict(state["metrics"])
    if run.rank == 0:
        print(f"resumed from {latest.path} (epoch {state['epoch']} done)", flush=True)
    return int(state["epoch"]) + 1


def steps_per_epoch(manifest: cauce.data.Manifest, features: Features, batch_size: int) -> int:
    """Batches per epoch on each rank (the same on every rank and in every epoch)."""
    return len(
        cauce.data.shard(
            manifest, "train", batch_size=batch_size, even="pad", columns=features.columns
        )
    )


def train_epoch(run: Run, epoch: int) -> float:
    """One pass over this rank's part of train; returns the mean loss over all ranks."""
    run.model.train()
    batches = cauce.data.shard(
        run.manifest,
        "train",
        batch_size=run.hp["batch_size"],
        shuffle=True,
        seed=run.args.seed,
        epoch=epoch,
        even="pad",  # the same number of batches on every rank: each step is a collective
        format="torch",
        columns=run.features.columns,
    )
    total_steps = run.hp["epochs"] * len(batches)  # the same for every epoch (even="pad")
    crash_at = -1
    if epoch == run.args.crash_at_epoch and run.ctx.attempt == 0:
        crash_at = len(batches) // 2 if run.rank == run.args.crash_rank else -1
    loss_sum = torch.zeros((), dtype=torch.float64)
    for step, batch in enumerate(batches):
        if step == crash_at:
            print(f"rank {run.rank}: SIGKILL at step {step} of epoch {epoch}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        for group in run.optimizer.param_groups:  # a function of the step: nothing to checkpoint
            group["lr"] = run.hp["lr"] * (1.0 - (epoch * len(batches) + step) / total_steps)
        codes, numbers = run.features.inputs(batch)
        labels = batch[LABEL].to(torch.float32)
        loss = nn.functional.binary_cross_entropy_with_logits(run.model(codes, numbers), labels)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.average is not None:
            run.average.update(run.net)
        loss_sum += loss.detach() * len(labels)
        if step % HEARTBEAT_EVERY == 0:
            cauce.heartbeat()
    return mean_over_ranks(float(loss_sum) / batches.num_rows)


def score(
    net: nn.Module, features: Features, batches: Iterable[dict[str, torch.Tensor]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Probabilities and labels of these batches."""
    net.eval()
    probabilities, labels = [], []
    with torch.inference_mode():
        for batch in batches:
            codes, numbers = features.inputs(batch)
            probabilities.append(torch.sigmoid(net(codes, numbers)).to(torch.float64).numpy())
            labels.append(batch[LABEL].to(torch.float64).numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def validate(run: Run) -> dict[str, float]:
    """AUC and log loss over the whole validation split: each rank scores its part."""
    part = cauce.data.shard(
        run.manifest, "validation", batch_size=8192, format="torch", columns=run.features.columns
    )
    probabilities, labels = score(run.final, run.features, part)
    probabilities, labels = gather_rows(probabilities), gather_rows(labels)
    return {
        "val_auc": roc_auc(labels, probabilities),
        "val_logloss": log_loss(labels, probabilities),
    }


def save_checkpoint(run: Run, epoch: int) -> None:
    state = {
        "model": run.net.state_dict(),
        "average": run.average.net.state_dict() if run.average is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "epoch": epoch,
        "rng": rng_states(),  # a collective: every rank takes part, rank 0 writes
        "metrics": run.metrics,
        "hyperparameters": run.hp,
        "dataset": run.manifest.content_hash,
    }
    cauce.checkpoint.save(state, step=epoch)  # atomic: complete, or not there at all
    if dist.is_initialized():
        dist.barrier()  # no rank reports the epoch before its checkpoint is complete


def code_sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_and_test(run: Run) -> dict[str, Any]:
    """Save the model for serving, then score the test split with the saved model (rank 0)."""
    # --model-out may be a URI (s3://...): shared storage that every host of a cluster reaches
    out = run.args.model_out or run.ctx.run_dir / "model"
    here = Path(__file__).resolve()
    features = run.features
    cauce.serve.save_model(
        out,
        Probability(run.final),
        name="flights",
        inputs=[
            cauce.serve.TensorSpec("categorical", "INT64", (-1, len(features.categorical))),
            cauce.serve.TensorSpec("numeric", "FP32", (-1, len(features.numeric))),
        ],
        outputs=[cauce.serve.TensorSpec("probability", "FP32", (-1,))],
        preprocessing=features.preprocessing(),
        lineage={
            "dataset": {"uri": run.manifest.root, "content_hash": run.manifest.content_hash},
            "job_id": run.ctx.job_id,
            "attempt": run.ctx.attempt,
            "code_sha256": code_sha256(here, here.with_name("baseline.py")),
            "hyperparameters": run.hp,
            "metrics": run.metrics,
        },
    )
    served = cauce.serve.load_model(out)
    test = cauce.data.shard(
        run.manifest,
        "test",
        batch_size=8192,
        format="torch",
        columns=features.columns,
        rank=0,
        world_size=1,
    )
    probabilities, labels = [], []
    for batch in test:
        codes, numbers = features.inputs(batch)
        outputs = served.predict({"categorical": codes.numpy(), "numeric": numbers.numpy()})
        probabilities.append(outputs["probability"].astype(np.float64))
        labels.append(batch[LABEL].numpy())
        cauce.heartbeat()
    p, y = np.concatenate(probabilities), np.concatenate(labels)
    return {
        "model": str(out),
        "hyperparameters": run.hp,
        **run.metrics,
        "test_auc": roc_auc(y, p),
        "test_logloss": log_loss(y, p),
    }


def read_baseline(path: str, manifest: cauce.data.Manifest) -> dict[str, Any]:
    result = dict(json.loads(Path(path).read_text(encoding="utf-8")))
    if result.get("dataset") != manifest.content_hash:
        raise SystemExit(
            f"error: {path} is the baseline of dataset {str(result.get('dataset'))[:16]}, "
            f"not of {manifest.content_hash[:16]}: run baseline.py again"
        )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--data", default=default_data(), help="the prepared dataset (default $FLIGHTS_DATA)"
    )
    for name, default in DEFAULTS.items():  # --lr, --hidden, --emb-dim, ...
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(default), default=default, help=f"default {default}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-out", help="where to save the model (default <run dir>/model)")
    parser.add_argument(
        "--results", help="write the final figures here as JSON (default <run dir>/results.json)"
    )
    parser.add_argument(
        "--baseline-result", help="a JSON file written by baseline.py, instead of fitting it"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument(
        "--crash-at-epoch",
        type=int,
        help="fault injection: in attempt 0, rank --crash-rank SIGKILLs itself halfway through "
        "this epoch",
    )
    parser.add_argument("--crash-rank", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("cauce.data._shard").addFilter(_SmallSplits())
    ctx = cauce.context()
    hp = hyperparameters(args, dict(ctx.params))
    # Before any rendezvous, so that a missing dataset or baseline file fails at once.
    manifest = open_dataset(args.data)
    baseline = read_baseline(args.baseline_result, manifest) if args.baseline_result else None
    if "MASTER_ADDR" in os.environ:  # under cauce run or torchrun
        dist.init_process_group("gloo")
    rank, size = world()
    features, edges = features_of(manifest, hp["bins"])
    cardinalities = [len(features.vocabularies[c]) + 1 for c in features.categorical]
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    net = FlightsNet(
        cardinalities, edges, emb_dim=hp["emb_dim"], hidden=hp["hidden"], dropout=hp["dropout"]
    )
    model: nn.Module = DistributedDataParallel(net) if dist.is_initialized() else net
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    average = None
    if hp["average"] > 0:
        steps = hp["epochs"] * steps_per_epoch(manifest, features, hp["batch_size"])
        average = WeightAverage(net, decay=1.0 - 1.0 / max(1.0, hp["average"] * steps))
    torch.manual_seed(args.seed * 1_000 + 1 + rank)  # each rank its own dropout masks
    run = Run(args, ctx, hp, manifest, features, net, model, average, optimizer, rank, size, {})
    del model  # run holds it: see leave_process_group

    trained_rows, seconds = 0, 0.0
    for epoch in range(resume(run), hp["epochs"]):
        began = time.perf_counter()
        train_loss = train_epoch(run, epoch)
        run.metrics = validate(run)
        save_checkpoint(run, epoch)
        took = time.perf_counter() - began
        trained_rows, seconds = trained_rows + manifest.rows["train"], seconds + took
        cauce.report(epoch, train_loss=train_loss, **run.metrics, seconds=took)
        if rank == 0:
            print(
                f"epoch {epoch}: train loss {train_loss:.4f}, validation AUC "
                f"{run.metrics['val_auc']:.4f}, log loss {run.metrics['val_logloss']:.4f} "
                f"({took:.1f} s)",
                flush=True,
            )

    # The last rank fits the baseline while rank 0 saves and scores the network.
    fits_baseline = baseline is None and not args.no_baseline
    if fits_baseline and rank == size - 1:
        baseline = fit_baseline(args.data, progress=cauce.heartbeat)
        if rank != 0:
            send_json(baseline, dst=0)
    if rank == 0:
        results = save_and_test(run)
        # epochs of this attempt: whole epochs (training, validation, checkpoint), all ranks
        results["train_samples_per_s"] = trained_rows / seconds if seconds else None
        if fits_baseline and size > 1:
            baseline = receive_json(src=size - 1)
        line = f"test AUC: model {results['test_auc']:.4f}"
        if baseline is not None:
            results["baseline"] = baseline
            line += f", baseline ({baseline['model']}) {baseline['test_auc']:.4f}"
        print(f"{line}; model saved to {results['model']}", flush=True)
        path = args.results or str(ctx.run_dir / "results.json")  # a path or a URI
        with fsspec.open(path, "w", encoding="utf-8") as file:
            file.write(json.dumps(results, indent=2) + "\n")
    if dist.is_initialized():
        with heartbeats():  # the other ranks wait here for rank 0 to finish
            dist.barrier()
        leave_process_group(run)
    return 0


def leave_process_group(run: Run) -> None:
    """DistributedDataParallel goes first, the process group after it. The other order hangs
    now and then (PyTorch 2.13, Gloo): DDP's C++ Reducer, freed with the GIL held, drops the
    group's last reference; the group then waits for its threads, and one of them, freeing an
    earlier collective's tensor, waits for the GIL. The rank never exits, using no CPU. Freed
    by ``destroy_process_group``, the group waits with the GIL released (docs/job-spec.md)."""
    run.model = run.net  # the last reference to the DDP wrapper: its Reducer goes here
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
