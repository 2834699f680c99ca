"""The training library the ``pipeline.train`` stages use: tf.data input pipelines, losses, the fit loop.

Devices and precision: ``facelab.nn.distributed``.

``fit`` trains a compiled model, keeps the best weights by validation loss, shows progress
with an ETA, and can resume an interrupted run from its last epoch (Keras BackupAndRestore
in a checkpoint folder named after the run's parameters, every file written atomically). It reports each epoch to the
callbacks it is given (tracking adds its own) and knows nothing of MLflow or DVC.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from facelab.atomic import atomic_path, write_json
from facelab.config import CHECKPOINTS_DIR, workspace_root
from facelab.errors import FacelabError
from facelab.nn import distributed
from facelab.nn.resnet import all_layers
from facelab.nn.sam import SharpnessAware

AUTOTUNE = tf.data.AUTOTUNE


# --- losses ---------------------------------------------------------------------------------


def _masked_errors(y_true, y_pred):
    """(|error| per coordinate with missing ones zeroed, count of present coordinates per face)."""
    y_true = keras.ops.cast(y_true, y_pred.dtype)
    present = keras.ops.logical_not(keras.ops.isnan(y_true))
    diff = keras.ops.where(present, y_true - y_pred, keras.ops.zeros_like(y_pred))
    count = keras.ops.maximum(keras.ops.sum(keras.ops.cast(present, y_pred.dtype), axis=-1), 1.0)
    return keras.ops.abs(diff), count


@keras.saving.register_keras_serializable(package="facelab")
def masked_mse(y_true, y_pred):
    """Mean squared error over the coordinates that exist (NaN in y_true = missing)."""
    error, count = _masked_errors(y_true, y_pred)
    return keras.ops.sum(keras.ops.square(error), axis=-1) / count


@keras.saving.register_keras_serializable(package="facelab")
def masked_l1(y_true, y_pred):
    """Mean absolute error in pixels over the coordinates that exist: less pulled by noisy labels than MSE."""
    error, count = _masked_errors(y_true, y_pred)
    return keras.ops.sum(error, axis=-1) / count


WING_WIDTH, WING_CURVATURE = 10.0, 2.0  # pixels (Feng et al., CVPR 2018, on 128 px faces)


@keras.saving.register_keras_serializable(package="facelab")
def masked_wing(y_true, y_pred):
    """Wing loss over the coordinates that exist: log-shaped below WING_WIDTH px (small errors weigh more), L1 above."""
    error, count = _masked_errors(y_true, y_pred)
    w, eps = WING_WIDTH, WING_CURVATURE
    offset = w - w * np.log1p(w / eps)
    loss = keras.ops.where(error < w, w * keras.ops.log1p(error / eps), error - offset)
    return keras.ops.sum(loss, axis=-1) / count


KEYPOINT_LOSSES = {"mse": masked_mse, "l1": masked_l1, "wing": masked_wing}


# --- input pipelines ------------------------------------------------------------------------


def _as_float_images(images):
    return tf.expand_dims(tf.cast(images, tf.float32), -1)


def make_dataset(
    images: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    augmenter: Callable | None = None,
    mixer: Callable | None = None,
    sample_weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """uint8 (N, H, W) images + targets -> batches of float32 (B, H, W, 1) 0-255 pixels.

    Images stay uint8 in memory until the batch is made; augmentation runs on whole batches, one
    batch at a time: with parallel map calls the Keras layers' random draws interleave differently
    on every run, so the same parameters trained a different emotion model each time. In order, the
    augmentation yields 5,000-11,000 faces/s (48x48) on 2 cores, 25x or more what training consumes
    (``benchmarks/bench_augmentation.py``).
    Shuffled (training) batches are all full: an epoch leaves out its last partial batch (other
    faces each epoch), so the training step is traced for one shape only (a ResNet-18 train step
    takes ~6 s to trace on 2 cores). Unshuffled (evaluation) batches keep every face.
    ``mixer`` (after ``augmenter``) blends the augmented faces and their targets (``emotion_mixer``);
    sample weights stay each face's own.
    """
    tensors = (images, targets) if sample_weights is None else (images, targets, sample_weights)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(min(len(images), 20000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=shuffle and len(images) >= batch_size)

    def to_model_input(x, y, *rest):
        x = _as_float_images(x)
        if augmenter is not None:
            x = augmenter(x, training=True)
        if mixer is not None:
            x, y = mixer(x, y)
        return (x, y, *rest)

    return ds.map(to_model_input).prefetch(AUTOTUNE)  # sequential: reproducible random draws


def images_per_epoch(n_images: int, batch_size: int) -> int:
    """Faces a shuffled ``make_dataset`` yields per epoch (full batches only, when there is one)."""
    return n_images - n_images % batch_size if n_images >= batch_size else n_images


# --- optimiser ------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="facelab")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``peak / 10`` to ``peak`` over ``warmup`` of the steps, then linear decay to 0."""

    def __init__(self, peak: float, steps: int, warmup: float = 0.15):
        self.peak, self.steps, self.warmup = float(peak), int(steps), float(warmup)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = max(1.0, self.steps * self.warmup)
        rising = self.peak * (0.1 + 0.9 * step / up)
        falling = self.peak * keras.ops.maximum(0.0, (self.steps - step) / max(1.0, self.steps - up))
        return keras.ops.where(step < up, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "steps": self.steps, "warmup": self.warmup}


SGD_MOMENTUM = 0.9
# What weight decay shrinks: every trainable weight, or the convolution and dense kernels only
# (names of the weights left alone: BatchNorm scales and offsets, biases).
WEIGHT_DECAY_ON = {"all": (), "kernels": ("gamma", "beta", "bias")}


def make_optimizer(
    lr: float, schedule: str, weight_decay: float, steps: int, optimizer: str = "adamw", decay_on: str = "all"
) -> keras.optimizers.Optimizer:
    """AdamW (Adam without decay) or SGD with Nesterov momentum, on a constant, cosine or one-cycle rate;
    the weight decay spares the weights ``WEIGHT_DECAY_ON[decay_on]`` names."""
    rate = lr
    if schedule == "cosine":
        warmup = max(1, steps // 20)
        rate = keras.optimizers.schedules.CosineDecay(
            lr * 0.1, decay_steps=max(1, steps - warmup), warmup_target=lr, warmup_steps=warmup, alpha=0.01
        )
    elif schedule == "onecycle":
        rate = OneCycle(lr, steps)
    if optimizer == "sgd":
        chosen = keras.optimizers.SGD(rate, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay or None)
    elif weight_decay:
        chosen = keras.optimizers.AdamW(rate, weight_decay=weight_decay)
    else:
        return keras.optimizers.Adam(rate)
    if WEIGHT_DECAY_ON[decay_on]:
        chosen.exclude_from_weight_decay(var_names=list(WEIGHT_DECAY_ON[decay_on]))
    return chosen


# --- the fit loop ---------------------------------------------------------------------------


class ProgressWithEta(keras.callbacks.Callback):
    """One line per epoch: epoch i/n, the logs, images/s and the time left."""

    def __init__(self, epochs: int, images_per_epoch: int, label: str, show: bool = True):
        super().__init__()
        self.epochs, self.images, self.label, self.show = epochs, images_per_epoch, label, show
        self.started = self.epoch_started = 0.0
        self.first_epoch: int | None = None
        self.images_per_second: list[float] = []

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()
        if self.first_epoch is None:
            self.first_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.images_per_second.append(self.images / max(now - self.epoch_started, 1e-9))
        done = epoch + 1 - (self.first_epoch or 0)
        eta = (now - self.started) / done * (self.epochs - epoch - 1)
        if not self.show:
            return
        shown = " ".join(f"{k}={v:.4g}" for k, v in (logs or {}).items() if k != "learning_rate")
        print(
            f"[{self.label}] epoch {epoch + 1}/{self.epochs} {shown} "
            f"{self.images_per_second[-1]:.0f} img/s, ETA {eta / 60:.1f} min",
            flush=True,
        )


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras BackupAndRestore (weights, optimizer state and epoch) whose files are never half-written.

    Each epoch's weights are saved by ``save_epoch_weights``: a crash at any moment leaves
    ``state.json`` naming a complete weights file of the epoch it records.
    """

    STATE = "state.json"

    def __init__(self, backup_dir: Path):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=True)
        self.folder = Path(backup_dir)
        self.saved: tuple[int | None, Path | None] = (None, None)  # (epoch, weights file) of the last save

    def _load_model(self):
        state_path = self.folder / self.STATE
        if not state_path.exists():
            return
        state = json.loads(state_path.read_text())
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.folder / state["weights"])
        self.model._initial_epoch = state["epoch"]  # as Keras's own BackupAndRestore does

    def _save_model(self):
        self.saved = (self._current_epoch, save_epoch_weights(self.model, self.folder, "epoch", self._current_epoch))


def save_epoch_weights(model: keras.Model, folder: Path, prefix: str, epoch: int) -> Path:
    """Save ``model``'s weights as ``folder/<prefix>-<epoch>.weights.h5`` (temporary name, then rename),
    then ``folder/state.json`` naming that file and the epoch (the same way), then remove the older
    ``<prefix>-*`` files: a crash at any moment leaves ``state.json`` naming a complete file."""
    name = f"{prefix}-{epoch:04d}.weights.h5"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / name, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    write_json(folder / AtomicBackupAndRestore.STATE, {"epoch": epoch, "weights": name})
    for older in folder.glob(f"{prefix}-*.weights.h5"):
        if older.name != name:
            older.unlink(missing_ok=True)
    return folder / name


class WeightAverage(keras.callbacks.Callback):
    """An exponential moving average of every floating-point weight, BatchNorm's moving statistics included.

    Updated after each training step with ``momentum``. Validation runs on the average (swapped in
    for it, the raw weights back before any epoch-end callback, so the backups hold the raw weights),
    and each epoch's average is saved in ``folder``: ``saved`` names that file, as
    ``AtomicBackupAndRestore.saved`` does, for ``BestWeights``; a run resumed from ``backup`` at that
    epoch resumes the average too. Keras' own ``use_ema`` averages only the trainable weights: the
    averaged convolutions met the raw network's BatchNorm statistics, and a 10-epoch emotion proxy
    validated at 0.516 against 0.612 without it (docs/results.md).
    """

    def __init__(self, momentum: float, folder: Path, backup: AtomicBackupAndRestore):
        super().__init__()
        self.momentum, self.folder, self.backup = momentum, Path(folder), backup
        self.saved: tuple[int | None, Path | None] = (None, None)

    def on_train_begin(self, logs=None):
        self._weights = [v for v in self.model.weights if "float" in str(v.dtype)]
        self._average = [tf.Variable(v.value, trainable=False) for v in self._weights]
        state_path, backup_state = self.folder / AtomicBackupAndRestore.STATE, self.backup.folder / self.backup.STATE
        if state_path.exists() and backup_state.exists():
            state = json.loads(state_path.read_text())
            if state["epoch"] == json.loads(backup_state.read_text())["epoch"]:
                with self._average_in_model():
                    self.model.load_weights(self.folder / state["weights"])
                    for average, weight in zip(self._average, self._weights):
                        average.assign(weight.value)
        momentum = self.momentum

        @tf.function
        def update():
            for average, weight in zip(self._average, self._weights):
                average.assign(momentum * average + (1 - momentum) * tf.cast(weight.value, average.dtype))

        self._update = update
        self._raw = None

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def _swap_in(self):
        self._raw = [w.numpy() for w in self._weights]
        for average, weight in zip(self._average, self._weights):
            weight.assign(average)

    def _swap_out(self):
        for raw, weight in zip(self._raw, self._weights):
            weight.assign(raw)
        self._raw = None

    @contextlib.contextmanager
    def _average_in_model(self):
        self._swap_in()
        try:
            yield
        finally:
            self._swap_out()

    def on_test_begin(self, logs=None):
        self._swap_in()

    def on_test_end(self, logs=None):
        self._swap_out()

    def on_epoch_end(self, epoch, logs=None):
        with self._average_in_model():
            self.saved = (epoch + 1, save_epoch_weights(self.model, self.folder, "average", epoch + 1))


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest val_loss in ``weights_path``, atomically.

    ``backup`` (listed before this callback: an ``AtomicBackupAndRestore``, or a ``WeightAverage``
    whose epoch-end file holds the average) has just written the epoch's weights: when val_loss
    improves, that file is hard-linked here instead of saved a second time (a save of the full
    ResNet-18 costs ~0.7 s an epoch on 2 cores). The best val_loss so far is kept in ``record_path``,
    so a resumed run only replaces the weights with better ones. A record without its weights file
    (a state folder from an older facelab, which kept ``best.keras``) is ignored: this run's best is kept.
    """

    def __init__(self, backup: AtomicBackupAndRestore, weights_path: Path, record_path: Path):
        super().__init__()
        self.backup, self.weights_path, self.record_path = backup, weights_path, record_path
        self.best = float("inf")
        if record_path.exists() and weights_path.exists():
            self.best = json.loads(record_path.read_text())["val_loss"]

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if loss is None or not np.isfinite(loss) or loss >= self.best:
            return
        self.best = float(loss)
        saved_epoch, saved_path = self.backup.saved
        with atomic_path(self.weights_path, suffix=".weights.h5") as tmp:
            tmp.unlink()
            if saved_epoch == epoch + 1:
                try:
                    os.link(saved_path, tmp)
                except OSError:  # no hard links on this file system
                    shutil.copyfile(saved_path, tmp)
            else:
                self.model.save_weights(tmp)
        write_json(self.record_path, {"val_loss": self.best, "epoch": epoch + 1})


def run_folder(stage: str, settings: dict) -> Path:
    """A checkpoint folder unique to the stage and the exact settings of the run."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return workspace_root() / CHECKPOINTS_DIR / f"{stage}-{digest}"


def fit(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    images_per_epoch: int,
    folder: Path,
    resume: bool,
    label: str,
    early_stopping_patience: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    show_progress: bool = True,
    average_momentum: float = 0.0,
    sam_rho: float = 0.0,
    sam_epochs: int = 0,
) -> tuple[keras.Model, dict, ProgressWithEta]:
    """Train ``model`` and return (best model by val_loss, history of every epoch, progress).

    ``train_ds`` (one pass = one epoch of ``steps_per_epoch`` batches) is repeated and read through
    one iterator for the whole run: with a new iterator every epoch (Keras's way with a finite
    dataset) epochs 2-6 of the emotion recipe ran at 130-227 img/s on 1.1-1.9 cores, against
    239-254 img/s on 1.9 cores with one iterator (``benchmarks/bench_iterator.py``).
    ``folder`` holds the resumable state: ``backup/`` (last epoch), ``best.weights.h5`` and
    ``history.csv`` (all epochs, across resumes).
    ``average_momentum`` > 0: a moving average of the weights (``WeightAverage``) is what each epoch
    validates and what is kept and returned.
    ``sam_rho`` > 0: sharpness-aware steps of that radius (``facelab.nn.sam``) in the last ``sam_epochs``
    epochs (0: in every epoch).
    With ``resume`` false any earlier state there is discarded first. ``show_progress`` false: no epoch lines
    (the other workers of a multi-worker run).
    """
    if not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    best_path = folder / "best.weights.h5"
    progress = ProgressWithEta(epochs, images_per_epoch, label, show_progress)
    backup = AtomicBackupAndRestore(folder / "backup")
    kept = [backup]  # the callback whose epoch-end weights file BestWeights keeps
    if average_momentum:
        kept.append(WeightAverage(average_momentum, folder / "average", backup))
    all_callbacks = [
        *kept,
        BestWeights(kept[-1], best_path, folder / "best.json"),
        keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
        progress,
        *callbacks,
    ]
    if sam_rho:
        all_callbacks.append(SharpnessAware(sam_rho, epochs - sam_epochs if sam_epochs else 0))
    if early_stopping_patience:
        all_callbacks.append(keras.callbacks.EarlyStopping("val_loss", patience=early_stopping_patience))
    if distributed.is_multi_worker(model.distribute_strategy):
        fit_replicated(model, train_ds, val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=all_callbacks)
    else:
        model.fit(
            train_ds.repeat(),
            steps_per_epoch=steps_per_epoch,
            validation_data=val_ds,
            epochs=epochs,
            verbose=0,
            shuffle=False,
            callbacks=all_callbacks,
        )
    best = model
    if best_path.exists():
        best = keras.Model.from_config(model.get_config())  # the same layers, uncompiled: no optimizer state
        best.load_weights(best_path)
    history = pd.read_csv(folder / "history.csv").drop_duplicates("epoch", keep="last")
    return best, {col: history[col].tolist() for col in history.columns}, progress


def fit_replicated(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback],
) -> None:
    """What ``model.fit(train_ds.repeat(), steps_per_epoch=..., validation_data=val_ds, epochs=...)`` does, under
    ``MultiWorkerMirroredStrategy``, where Keras 3.15's ``fit`` fails (keras-team/keras#20585,
    tensorflow/tensorflow#72388): it reduces its first distributed batch across the workers to build the model
    ("Attempt to convert a value (PerReplica...) to a Tensor"), and, past that, each step's scalar metrics with
    ``axis=0`` ("Invalid reduction dimension 0 for input with 0 dimensions").

    Here the model, its compiled loss and metrics and its optimizer are built first from the dataset's element
    spec (``distributed.build_before_fit``); each step runs Keras's own ``train_step`` (``test_step`` for validation)
    under ``strategy.run``, so losses, gradients (summed across the replicas by the optimizer) and metrics are
    Keras's; an epoch's logs are the metrics read across the workers. The callbacks see what ``fit`` gives
    them: train begin (where a backup restores the epoch to resume from, ``model._initial_epoch``), epoch and
    batch begin/end, test begin/end around validation, ``val_``-prefixed logs, ``model.stop_training``.
    """
    strategy = model.distribute_strategy
    distributed.build_before_fit(model, train_ds.element_spec, strategy)
    train_batches = iter(strategy.experimental_distribute_dataset(train_ds.repeat()))
    val_batches = strategy.experimental_distribute_dataset(val_ds)

    @tf.function
    def train_step(iterator):
        strategy.run(model.train_step, args=(next(iterator),))

    @tf.function(reduce_retracing=True)
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    def results() -> dict:
        return {name: float(value) for name, value in model.get_metrics_result().items()}

    listed = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    listed.on_train_begin()
    first = getattr(model, "_initial_epoch", None) or 0
    starts = sorted(set(distributed.every_replica(first, strategy)))
    if len(starts) > 1:
        raise FacelabError(
            f"the workers resume from different epochs ({', '.join(map(str, starts))}): every worker must see the "
            f"chief's checkpoint folder ({CHECKPOINTS_DIR}, a shared file system), or set resume: false"
        )
    logs: dict = {}
    for epoch in range(first, epochs):
        try:
            model.reset_metrics()
            listed.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                listed.on_train_batch_begin(step)
                train_step(train_batches)
                listed.on_train_batch_end(step)
                if model.stop_training:
                    break
            logs = results()
            model.reset_metrics()
            listed.on_test_begin()
            for step, batch in enumerate(val_batches):
                listed.on_test_batch_begin(step)
                test_step(batch)
                listed.on_test_batch_end(step)
            val_logs = results()
        except KeyboardInterrupt:
            distributed.tell_the_cluster(f"was interrupted in epoch {epoch + 1}")
            raise
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as error:
            reason = re.sub(r"^\{\{.*?\}\}\s*", "", str(error).strip().splitlines()[0]).split("aborted by: ")[-1]
            raise FacelabError(
                f"a worker of the cluster stopped in epoch {epoch + 1} ({reason[:200]}); start every worker again: "
                f"training resumes from the last finished epoch ({epoch}) where resume is on"
            ) from None
        listed.on_test_end(val_logs)
        logs.update({f"val_{name}": value for name, value in val_logs.items()})
        listed.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    if epochs > 0:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    listed.on_train_end(logs)


def finish_run(folder: Path) -> None:
    """Forget a finished run's resumable state."""
    shutil.rmtree(folder, ignore_errors=True)


# --- after training -------------------------------------------------------------------------


def recompute_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int, seed: int) -> keras.Model:
    """A copy of ``model`` whose BatchNorm statistics are averaged over ``images`` (uint8 (N, H, W)) as they are.

    While training, each BatchNorm layer's moving mean and variance follow the last few augmented
    batches (momentum ``model.BN_MOMENTUM``); the copy's are the mean of every batch's over
    ``images`` with no further augmentation (shuffled with ``seed``, ``batch_size`` a batch, the
    last partial batch left out): the emotion stage passes its training faces, the keypoint stage
    its training split, which holds the augment stage's copies. Weights are unchanged. On a copy
    built outside any distribution strategy, so it works whatever trained ``model``.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    norms = [layer for layer in all_layers(copy) if isinstance(layer, keras.layers.BatchNormalization)]
    order = np.random.default_rng(seed).permutation(len(images))
    batch_size = min(batch_size, len(images))
    momentum = [layer.momentum for layer in norms]
    for k, start in enumerate(range(0, len(images) - batch_size + 1, batch_size)):
        for layer in norms:
            layer.momentum = k / (k + 1)  # the k-th batch weighs 1/(k+1): a running mean of the batches
        copy(_as_float_images(images[order[start : start + batch_size]]), training=True)
    for layer, kept in zip(norms, momentum):
        layer.momentum = kept
    return copy
