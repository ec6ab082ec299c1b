"""A small neural network on two interleaved spirals, in NumPy: quick, with a real learning curve.

Each epoch reports ``val_loss`` and ``val_acc`` with ``cauce.report``, so that ``cauce tune``
can prune trials that learn slowly. The hyperparameters come from ``cauce.context().params``
(set by ``cauce tune``); run alone (``python train.py`` or ``cauce run job.yaml``) it uses the
defaults below.

    python train.py --epochs 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import cauce

DEFAULTS = {"lr": 0.05, "hidden": 32, "momentum": 0.9, "batch": 32}


def spirals(count: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two spirals wound around each other: labels 0 and 1, ``count`` points each."""
    turns = np.sqrt(rng.uniform(0.05, 1.0, count)) * 3.0 * np.pi
    arm = np.stack([np.cos(turns) * turns, np.sin(turns) * turns], axis=1) / (3.0 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0.0, noise, (2 * count, 2))
    y = np.concatenate([np.zeros(count, dtype=np.int64), np.ones(count, dtype=np.int64)])
    order = rng.permutation(2 * count)
    return x[order], y[order]


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.tanh(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


def loss_and_accuracy(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    _, probs = forward(params, x)
    loss = -np.log(probs[np.arange(len(y)), y] + 1e-12).mean()
    return float(loss), float((probs.argmax(axis=1) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=4000, help="training points per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epoch-delay", type=float, default=0.0, help="extra seconds per epoch (a bigger model)"
    )
    args = parser.parse_args()

    ctx = cauce.context()
    hp = {**DEFAULTS, **ctx.params}
    lr, momentum = float(hp["lr"]), float(hp["momentum"])
    width, batch = int(hp["hidden"]), int(hp["batch"])

    rng = np.random.default_rng(args.seed)
    x_train, y_train = spirals(args.samples, 0.05, rng)
    x_val, y_val = spirals(args.samples // 4, 0.05, rng)
    params = {
        "w1": rng.normal(0.0, 1.0, (2, width)),
        "b1": np.zeros(width),
        "w2": rng.normal(0.0, 1.0 / np.sqrt(width), (width, 2)),
        "b2": np.zeros(2),
    }
    velocity = {name: np.zeros_like(value) for name, value in params.items()}

    for epoch in range(args.epochs):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            x, y = x_train[index], y_train[index]
            hidden, probs = forward(params, x)
            dlogits = probs
            dlogits[np.arange(len(y)), y] -= 1.0
            dlogits /= len(y)
            dhidden = (dlogits @ params["w2"].T) * (1.0 - hidden**2)
            grads = {
                "w2": hidden.T @ dlogits,
                "b2": dlogits.sum(axis=0),
                "w1": x.T @ dhidden,
                "b1": dhidden.sum(axis=0),
            }
            for name, grad in grads.items():
                velocity[name] = momentum * velocity[name] - lr * grad
                params[name] += velocity[name]
        val_loss, val_acc = loss_and_accuracy(params, x_val, y_val)
        # The tuner reads these; if it prunes this trial, this call raises cauce.TrialPruned
        # (a SystemExit with code 0) and the script ends here.
        cauce.report(epoch, val_loss=val_loss, val_acc=val_acc)
        if args.epoch_delay:
            time.sleep(args.epoch_delay)
    print(f"val_loss {val_loss:.4f} val_acc {val_acc:.3f} with {hp}", flush=True)


if __name__ == "__main__":
    main()
