"""One task of a TensorFlow MultiWorkerMirroredStrategy job, on CPU, from TF_CONFIG.

A custom training loop (Keras 3's ``model.fit`` fails under this strategy, keras-team/keras#20585)
fits a linear regression on synthetic data that every task generates alike, each training on its
shard of every global batch. At the end every task writes its final weights to
``OUT/<type>-<index>.npy`` and its first and last losses to ``OUT/<type>-<index>.json``: the
weights must be identical across tasks, since the gradients were all-reduced.

    python tf_mwms.py --out DIR [--steps 30]      (DIR may also come from TF_MWMS_OUT)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

FEATURES = 4
GLOBAL_BATCH = 32
TRUE_W = np.array([[1.5], [-2.0], [0.5], [3.0]], dtype=np.float32)
TRUE_B = 0.25


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("TF_MWMS_OUT"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    if not args.out:
        parser.error("--out (or TF_MWMS_OUT) is required")

    config = json.loads(os.environ["TF_CONFIG"])
    task = f"{config['task']['type']}-{config['task']['index']}"
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = strategy.num_replicas_in_sync

    rng = np.random.default_rng(0)  # the same data on every task
    x = rng.normal(size=(GLOBAL_BATCH * args.steps, FEATURES)).astype(np.float32)
    y = (x @ TRUE_W + TRUE_B).astype(np.float32)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).with_options(options)
    batches = iter(strategy.experimental_distribute_dataset(dataset))

    with strategy.scope():
        # MEAN aggregation: an update made in replica context is averaged across all replicas
        # of all tasks, so every copy of the weights stays the same.
        weights = tf.Variable(tf.zeros((FEATURES, 1)), aggregation=tf.VariableAggregation.MEAN)
        bias = tf.Variable(0.0, aggregation=tf.VariableAggregation.MEAN)

    def replica_step(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(features @ weights + bias - target))
        grad_w, grad_b = tape.gradient(loss, [weights, bias])
        weights.assign_sub(args.lr * grad_w)
        bias.assign_sub(args.lr * grad_b)
        return loss

    @tf.function
    def train_step(batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        losses = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    history = [float(train_step(next(batches))) for _ in range(args.steps)]
    # a last collective, so that no task leaves while another still waits on it
    final = np.concatenate([weights.numpy().ravel(), [float(bias.numpy())]])
    local = tf.constant(float(final.sum()) / replicas)

    @tf.function
    def barrier() -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: local), axis=None)

    checksum = barrier()

    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, f"{task}.npy"), final)
    with open(os.path.join(args.out, f"{task}.json"), "w", encoding="utf-8") as file:
        json.dump(
            {
                "task": task,
                "replicas": replicas,
                "first_loss": history[0],
                "last_loss": history[-1],
                "checksum": float(checksum),
            },
            file,
        )
    print(f"{task}: loss {history[0]:.4f} -> {history[-1]:.4f} over {replicas} replicas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
