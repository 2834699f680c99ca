"""Trainings on two replicas and on one device, for tests/model/test_replicas.py, in a process of their own:
``FACELAB_CPU_DEVICES=2 python -m tests.support.two_replicas OUT.pickle`` (two logical CPU devices must be set up
before TensorFlow's runtime starts, so not in the test process); with a ``TF_CONFIG`` instead, one worker of a
cluster (``worker_main``). Each run trains the same small dense network (no BatchNorm: two replicas and one device
on the same global batches then agree to float rounding) from the same weights on the same global batches with
``training.fit``, under the two-replica ``MirroredStrategy`` and under the default strategy, and saves every
replica's weights: at the end, and as each replica validates them at each epoch's end (with a weight average: the
average).

The runs (``RUNS``): sharpness-aware steps in every epoch; the same on two replicas with each replica perturbing
by its own gradient (the step before the gradients were summed: what a replica does on its half of the batch);
the weight average; sharpness-aware steps in the last epoch with the weight average, through the fit loop of
several workers (``distributed.fit_replicated``) and, for contrast, without sharpness-aware steps.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import tempfile
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from facelab.nn import distributed, sam, training
from tests.support.networks import dense_network

SHAPE = (6, 6, 1)
RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, size=(64, *SHAPE)).astype(np.float32)
PIXEL_WEIGHTS = RNG.normal(size=(36, 2)).astype(np.float32)
Y = (X.reshape(64, -1) / 255) @ PIXEL_WEIGHTS + RNG.normal(scale=0.1, size=(64, 2)).astype(np.float32)
GLOBAL_BATCH, TRAIN, STEPS = 24, 48, 2  # two steps of 24 faces an epoch: 12 faces a replica
LR, RHO, MOMENTUM = 0.05, 0.5, 0.8
# name -> (training.fit's options, epochs, the fit loop of several workers, each replica perturbs by its own gradient)
RUNS = {
    "sam": ({"sam_rho": RHO}, 2, False, False),
    "sam_unsynced": ({"sam_rho": RHO}, 2, False, True),
    "average": ({"average_momentum": MOMENTUM}, 3, False, False),
    "workers_loop": ({"sam_rho": RHO, "sam_epochs": 1, "average_momentum": MOMENTUM}, 3, True, False),
    "workers_loop_plain": ({"average_momentum": MOMENTUM}, 3, True, False),
}
WORKER_RUNS = ("sam", "workers_loop")  # what each of two worker processes trains (``worker_main``)


def replica_values(variable) -> list[np.ndarray]:
    """``variable`` as each replica holds it (one value on one device)."""
    return [v.numpy() for v in tf.distribute.get_strategy().experimental_local_results(variable.value)]


class Validated(keras.callbacks.Callback):
    """Every replica's weights as it validates them, at each epoch's end (after the weight average's swap)."""

    def __init__(self, strategy):
        super().__init__()
        self.strategy, self.epochs = strategy, []

    def on_test_begin(self, logs=None):
        with self.strategy.scope():
            self.epochs.append([replica_values(w) for w in self.model.trainable_weights])


def train(strategy, options: dict, epochs: int, folder: Path) -> dict:
    """``training.fit`` of the dense network with ``options``: every replica's weights at the end and as validated
    at each epoch's end (lists over the weights, of lists over the replicas), and the training loss per epoch."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = dense_network(SHAPE)
        model.compile(keras.optimizers.SGD(LR), "mse")
    data = tf.data.Dataset.from_tensor_slices((X[:TRAIN], Y[:TRAIN])).batch(GLOBAL_BATCH)
    data = distributed.shard_by_data(data, strategy)  # several workers: each takes its share of every batch
    val = distributed.shard_by_data(tf.data.Dataset.from_tensor_slices((X[TRAIN:], Y[TRAIN:])).batch(8), strategy)
    validated = Validated(strategy)
    _, history, _ = training.fit(
        model,
        data,
        val,
        epochs=epochs,
        steps_per_epoch=STEPS,
        images_per_epoch=TRAIN,
        folder=folder,
        resume=False,
        label="replicas",
        show_progress=False,
        callbacks=[validated],
        **options,
    )
    with strategy.scope():
        final = [replica_values(w) for w in model.trainable_weights]
    return {"final": final, "validated": validated.epochs, "loss": list(history["loss"])}


def patched(workers_loop: bool, unsynced: bool) -> contextlib.ExitStack:
    """``training.fit`` through ``fit_replicated`` (the loop of several workers), and/or SAM steps whose first
    gradient is not summed across the replicas (each replica perturbs by its own)."""
    stack = contextlib.ExitStack()
    if workers_loop:
        stack.enter_context(mock.patch.object(distributed, "is_multi_worker", lambda strategy: True))
    if unsynced:
        stack.enter_context(mock.patch.object(sam, "_summed_across_replicas", lambda gradients: gradients))
    return stack


def main(out: str) -> None:
    """Every run of ``RUNS`` on two replicas and (but the unsynced one) on one device, the plain one-device path,
    saved to ``out``: {name: {"two" | "one": train's result}}."""
    two = distributed.training_strategy()
    if two.num_replicas_in_sync != 2:
        raise SystemExit(f"expected two replicas ({distributed.CPU_DEVICES_ENV}=2), got {two.num_replicas_in_sync}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (options, epochs, workers_loop, unsynced) in RUNS.items():
            with patched(workers_loop, unsynced):
                results[name] = {"two": train(two, options, epochs, Path(tmp) / f"{name}-two")}
            if not unsynced:
                one = tf.distribute.get_strategy()
                results[name]["one"] = train(one, options, epochs, Path(tmp) / f"{name}-one")
    Path(out).write_bytes(pickle.dumps(results))


def worker_main(out: str) -> None:
    """One worker of TF_CONFIG's cluster (``MultiWorkerMirroredStrategy``, one replica here): the runs of
    ``WORKER_RUNS``, through ``fit_replicated`` as ``training.fit`` trains under several workers, saved to ``out``:
    {name: train's result}."""
    strategy = distributed.training_strategy()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in WORKER_RUNS:
            options, epochs, _, _ = RUNS[name]
            results[name] = train(strategy, options, epochs, Path(tmp) / name)
    Path(out).write_bytes(pickle.dumps(results))


if __name__ == "__main__":
    (worker_main if distributed.cluster_config() else main)(sys.argv[1])
