"""A small training run through facelab's own fit (``nn.training.fit``: Keras's ``Model.fit`` on one replica,
``nn.distributed.fit_replicated`` under several workers) that keeps every weight and optimizer variable after
each epoch: for the tests that two workers train as one (tests/e2e/test_workers_in_step.py) and that a resumed
run restores its whole state (tests/model/test_resume.py, and the killed worker of the e2e test).

    python -m tests.support.worker_steps OUT [--epochs N] [--worker-dies-in-epoch E]

* With ``TF_CONFIG`` naming a cluster: one worker of a ``MultiWorkerMirroredStrategy`` (``training_strategy``),
  ``GLOBAL_BATCH / replicas`` faces a replica. It writes ``OUT/worker<i>-epoch<k>.npz`` (``state``) at the start
  (k = 0) and after every epoch, and ``OUT/worker<i>-resumed-at<k>.npz`` when it resumed after k epochs. The
  chief keeps its resumable state in ``OUT/state``, the other worker in a copy (``distributed.worker_folder``):
  started again, both resume. ``--worker-dies-in-epoch E``: worker 1 kills itself (SIGKILL) at the second step
  of epoch E, as ``kill -9`` would.
* Without: one replica, three runs from the same initial weights: ``one`` on the same global batches,
  ``half0`` and ``half1`` on the first and the second half of each global batch alone (what two workers that
  never exchange their gradients would train), each written as ``OUT/<run>-epoch<k>.npz``.

Float32, a fixed seed, ``dense_network`` (no BatchNorm: one replica's steps and two replicas' then differ by
float rounding only), AdamW on the cosine schedule from ``training.make_optimizer``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facelab.nn import distributed, input_pipeline, training
from tests.support.networks import dense_network

SEED = 7
TRAIN_FACES, VAL_FACES, SIDE = 64, 16, 6
GLOBAL_BATCH = 16
STEPS_PER_EPOCH = TRAIN_FACES // GLOBAL_BATCH
LR, WEIGHT_DECAY = 0.01, 1e-3
EPOCHS = 3


def faces() -> tuple[np.ndarray, np.ndarray]:
    """Seeded uint8 (N, SIDE, SIDE) faces and float32 (N, 2) targets, a noisy linear function of the pixels."""
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, size=(TRAIN_FACES + VAL_FACES, SIDE, SIDE), dtype=np.uint8)
    mixing = rng.normal(size=(SIDE * SIDE, 2)).astype(np.float32)
    targets = images.reshape(len(images), -1).astype(np.float32) / 255 @ mixing
    return images, targets + rng.normal(scale=0.1, size=targets.shape).astype(np.float32)


def _datasets(strategy: tf.distribute.Strategy, half: int | None) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, val) as the training stages make them (``input_pipeline.make_dataset``, shuffled with the seed,
    ``distributed.shard_by_data``), in global batches; ``half`` 0 or 1: only that half of each training batch."""
    images, targets = faces()
    train = input_pipeline.make_dataset(
        images[:TRAIN_FACES], targets[:TRAIN_FACES], GLOBAL_BATCH, shuffle=True, seed=SEED
    )
    if half is not None:
        part = slice(0, GLOBAL_BATCH // 2) if half == 0 else slice(GLOBAL_BATCH // 2, None)
        train = train.map(lambda x, y: (x[part], y[part]))
    val = input_pipeline.make_dataset(
        images[TRAIN_FACES:], targets[TRAIN_FACES:], GLOBAL_BATCH, shuffle=False, seed=SEED
    )
    return distributed.shard_by_data(train, strategy), distributed.shard_by_data(val, strategy)


def setup(
    strategy: tf.distribute.Strategy, epochs: int = EPOCHS, half: int | None = None
) -> tuple[keras.Model, tf.data.Dataset, tf.data.Dataset]:
    """(model, train, val) in the training stages' order: the seed (the shuffle's order and the initial weights
    follow it), the datasets, then ``dense_network`` compiled in ``strategy``'s scope with AdamW on a cosine
    schedule over ``epochs`` epochs."""
    keras.utils.set_random_seed(SEED)
    train_ds, val_ds = _datasets(strategy, half)
    with strategy.scope():
        model = dense_network((SIDE, SIDE, 1))
        optimizer = training.make_optimizer(LR, "cosine", WEIGHT_DECAY, epochs * STEPS_PER_EPOCH)
        model.compile(optimizer=optimizer, loss="mse")
    return model, train_ds, val_ds


def state(model: keras.Model) -> dict[str, np.ndarray]:
    """Every weight (``weight00``, ...), every optimizer variable (``optimizer00``, ...: the step counter, then
    each weight's moments), and the learning rate the next step would use (``learning_rate``)."""
    arrays = {f"weight{i:02d}": np.array(v.numpy()) for i, v in enumerate(model.weights)}
    arrays.update({f"optimizer{i:02d}": np.array(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    arrays["iterations"] = np.array(model.optimizer.iterations.numpy())
    arrays["learning_rate"] = np.array(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return arrays


def distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray], prefix: str = "") -> float:
    """The largest absolute difference between two ``state``s, over the arrays whose names start with ``prefix``
    (both must hold the same such names)."""
    names = sorted(k for k in a if k.startswith(prefix))
    assert names and names == sorted(k for k in b if k.startswith(prefix)), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in names)


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return dict(arrays)


class Snapshots(keras.callbacks.Callback):
    """``state`` at the start (``<name>-epoch0.npz``, or ``<name>-resumed-at<k>.npz`` when resumed after k
    epochs) and after every epoch (``<name>-epoch<k>.npz``), in ``folder``. List it after the backup."""

    def __init__(self, folder: Path, name: str):
        super().__init__()
        self.folder, self.name = Path(folder), name

    def on_train_begin(self, logs=None):
        done = getattr(self.model, "_initial_epoch", None) or 0
        np.savez(
            self.folder / (f"{self.name}-resumed-at{done}.npz" if done else f"{self.name}-epoch0.npz"),
            **state(self.model),
        )

    def on_epoch_end(self, epoch, logs=None):
        np.savez(self.folder / f"{self.name}-epoch{epoch + 1}.npz", **state(self.model))


class DiesInEpoch(keras.callbacks.Callback):
    """Kills this process (SIGKILL: no handler, no clean-up) at the second step of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch, self.current = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def train(model, train_ds, val_ds, folder: Path, *, epochs: int = EPOCHS, resume: bool = False, callbacks=()):
    """``training.fit`` as the training stages call it, ``STEPS_PER_EPOCH`` steps an epoch."""
    return training.fit(
        model,
        train_ds,
        val_ds,
        epochs=epochs,
        steps_per_epoch=STEPS_PER_EPOCH,
        images_per_epoch=TRAIN_FACES,
        folder=folder,
        resume=resume,
        label="worker_steps",
        show_progress=False,
        callbacks=list(callbacks),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--worker-dies-in-epoch", type=int, default=0)
    args = parser.parse_args()
    strategy = distributed.training_strategy()  # first: before any TensorFlow op
    args.out.mkdir(parents=True, exist_ok=True)
    if not distributed.is_multi_worker(strategy):
        for name, half in (("one", None), ("half0", 0), ("half1", 1)):
            model, train_ds, val_ds = setup(strategy, args.epochs, half)
            train(
                model,
                train_ds,
                val_ds,
                args.out / f"state-{name}",
                epochs=args.epochs,
                callbacks=[Snapshots(args.out, name)],
            )
        return
    chief = distributed.is_chief(strategy)
    index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    model, train_ds, val_ds = setup(strategy, args.epochs)
    callbacks = [Snapshots(args.out, f"worker{index}")]
    if args.worker_dies_in_epoch and index == 1:
        callbacks.append(DiesInEpoch(args.worker_dies_in_epoch))
    folder = distributed.worker_folder(args.out / "state", chief)
    try:
        train(model, train_ds, val_ds, folder, epochs=args.epochs, resume=True, callbacks=callbacks)
    finally:
        distributed.release_worker_folder(folder, chief)
    print(f"worker {index}: trained {args.epochs} epochs", flush=True)


if __name__ == "__main__":
    main()
