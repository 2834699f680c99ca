"""The training library the ``pipeline.train`` stages use: losses, the optimizer and its schedule, the fit loop.

``fit`` trains a compiled model, keeps the best weights by validation loss, shows progress
with an ETA, and can resume an interrupted run from its last epoch (Keras BackupAndRestore
in a checkpoint folder named after the run's parameters, ``run_folder``, every file written atomically). It reports
each epoch to the callbacks it is given (tracking adds its own) and knows nothing of MLflow or DVC. After training,
``recompute_batchnorm`` averages the BatchNorm statistics over the training faces; ``finish_run`` forgets the run's
resumable state.

Elsewhere: the input pipelines in ``facelab.nn.input_pipeline``, the callbacks ``fit`` trains with in
``facelab.nn.callbacks``, the fit loop of several workers (``fit_replicated``) and everything else about several
replicas in ``facelab.nn.distributed``, precision in ``facelab.nn.precision``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from facelab.config import CHECKPOINTS_DIR, workspace_root
from facelab.nn import distributed
from facelab.nn.callbacks import (
    AtomicBackupAndRestore,
    BestWeights,
    ProgressiveResizing,
    ProgressWithEta,
    WeightAverage,
)
from facelab.nn.input_pipeline import as_float_images
from facelab.nn.resnet import all_layers
from facelab.nn.sam import SharpnessAware

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


def make_optimizer_from(cfg: Mapping[str, Any], steps: int, lr: float | None = None) -> keras.optimizers.Optimizer:
    """``make_optimizer`` with a training section's settings (``train_<task>`` of params.yaml) over ``steps``
    steps; ``lr`` in place of the section's rate (the rate scaled to the replicas, ``distributed``)."""
    return make_optimizer(
        cfg["lr"] if lr is None else lr,
        cfg["lr_schedule"],
        cfg["weight_decay"],
        steps,
        cfg["optimizer"],
        cfg["weight_decay_on"],
    )


# --- the fit loop ---------------------------------------------------------------------------


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
    progressive: Mapping[str, int] | None = None,
) -> tuple[keras.Model, dict, ProgressWithEta]:
    """Train ``model`` and return (best model by val_loss, history of every epoch, progress).

    ``train_ds`` (one pass = one epoch of ``steps_per_epoch`` batches) is repeated and read through
    one iterator for the whole run: with a new iterator every epoch (Keras's way with a finite
    dataset) epochs 2-6 of the emotion recipe ran at 130-227 img/s on 1.1-1.9 cores, against
    239-254 img/s on 1.9 cores with one iterator (``benchmarks/bench_iterator.py``).
    ``folder`` holds the resumable state: ``backup/`` (last epoch: weights and optimizer state),
    ``best.weights.h5`` and ``history.csv`` (all epochs, across resumes). A resumed run first skips the batches of
    the epochs it finished, so that it trains on what an uninterrupted run would (the same shuffles and random
    draws) and ends with its weights and optimizer state (tests/model/test_resume.py); skipping k epochs makes
    their batches again, augmentation included (not trained on: a fraction of the epochs' time).
    ``average_momentum`` > 0: a moving average of the weights (``WeightAverage``) is what each epoch
    validates and what is kept and returned.
    ``sam_rho`` > 0: sharpness-aware steps of that radius (``facelab.nn.sam``) in the last ``sam_epochs``
    epochs (0: in every epoch).
    ``progressive`` (``{"epochs", "image_size", "crop"}``, epochs > 0): the first epochs on smaller faces
    (``ProgressiveResizing``; one worker only).
    With ``resume`` false any earlier state there is discarded first. ``show_progress`` false: no epoch lines
    (the other workers of a multi-worker run).
    """
    if not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    best_path = folder / "best.weights.h5"
    resized = ProgressiveResizing(**progressive) if progressive and progressive["epochs"] else None
    progress = ProgressWithEta(
        epochs, images_per_epoch, label, show_progress, epoch_cost=resized.pixels if resized else None
    )
    backup = AtomicBackupAndRestore(folder / "backup")
    if done := backup.epochs_done():  # resumed: the finished epochs' batches (shuffles, random draws) are skipped
        train_ds = train_ds.repeat().skip(done * steps_per_epoch)
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
    if resized:  # first: every other callback's epoch begins at the epoch's size
        all_callbacks.insert(0, resized)
    if distributed.is_multi_worker(model.distribute_strategy):
        if resized:
            raise ValueError("progressive resizing is not supported with several workers (the steps stay traced)")
        distributed.fit_replicated(
            model, train_ds, val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=all_callbacks
        )
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


def finish_run(folder: Path) -> None:
    """Forget a finished run's resumable state."""
    shutil.rmtree(folder, ignore_errors=True)


# --- after training -------------------------------------------------------------------------


def recompute_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int, seed: int) -> keras.Model:
    """A copy of ``model`` whose BatchNorm statistics are averaged over ``images`` (uint8 (N, H, W)) as they are.

    While training, each BatchNorm layer's moving mean and variance follow the last few augmented
    batches (momentum ``resnet.BN_MOMENTUM``); the copy's are the mean of every batch's over
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
        copy(as_float_images(images[order[start : start + batch_size]]), training=True)
    for layer, kept in zip(norms, momentum):
        layer.momentum = kept
    return copy
