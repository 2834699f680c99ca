"""The Keras callbacks ``training.fit`` trains with, and how an epoch's weights are saved.

* ``ProgressWithEta``: one line per epoch with images/s and the time left.
* ``AtomicBackupAndRestore``: Keras's BackupAndRestore (resume an interrupted run from its last epoch) whose
  files are never half-written; ``save_epoch_weights`` writes an epoch's weights and the ``state.json`` naming them.
* ``WeightAverage``: an exponential moving average of the weights, validated and saved each epoch.
* ``BestWeights``: the weights of the epoch with the lowest val_loss, kept across resumes.
* ``ProgressiveResizing``: progressive resizing, the first epochs on smaller faces than the network is built for.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facelab.atomic import atomic_path, write_json


class ProgressWithEta(keras.callbacks.Callback):
    """One line per epoch: epoch i/n, the logs, images/s and the time left.

    The time left is the time so far scaled by ``epoch_cost`` (an epoch's relative cost, by its number) of the
    epochs left against those done: with progressive resizing a small epoch costs less than a full-size one.
    """

    def __init__(
        self,
        epochs: int,
        images_per_epoch: int,
        label: str,
        show: bool = True,
        epoch_cost: Callable[[int], float] | None = None,
    ):
        super().__init__()
        self.epochs, self.images, self.label, self.show = epochs, images_per_epoch, label, show
        self.epoch_cost = epoch_cost or (lambda epoch: 1.0)
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
        done = sum(self.epoch_cost(e) for e in range(self.first_epoch or 0, epoch + 1))
        eta = (now - self.started) / done * sum(self.epoch_cost(e) for e in range(epoch + 1, self.epochs))
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
    ``state.json`` naming a complete weights file of the epoch it records. That file (Keras's ``save_weights``)
    holds the optimizer's variables too: its step counter (the learning-rate schedule's step) and every moment;
    the optimizer is built before they are loaded, else Keras skips them with a warning. Where the batches
    resume is ``training.fit``'s part (``epochs_done``).
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

    def epochs_done(self) -> int:
        """The finished epochs the backup holds, which a fit resumes after: 0 when there is no backup."""
        state_path = self.folder / self.STATE
        return json.loads(state_path.read_text())["epoch"] if state_path.exists() else 0


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
    validated at 0.516 against 0.612 without it (docs/results.md). Under several replicas the average follows the
    weights as this process's first replica holds them (trainable weights are the same on every replica; BatchNorm
    statistics are that replica's, as in the saved model) and is swapped in on every replica; the raw weights go
    back as that replica held them (tests/model/test_replicas.py).
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


class ProgressiveResizing(keras.callbacks.Callback):
    """Progressive resizing: in the first ``epochs`` epochs the network resizes its input to ``image_size``
    pixels and sees the centred ``crop`` (0: all of it); from then on, and after training, the sizes it was
    built with, which are what it is saved and served at.

    The model needs a Resizing layer named ``resize`` and a CenterCrop named ``crop`` with nothing after them
    that depends on the map's size (``resnet.build_emotion_model(..., resizable=True)``: convolutions, then the
    average over positions), so every weight serves both sizes. The sizes are set at each epoch's start from
    the epoch's number, so a resumed run trains each epoch at the size an uninterrupted one would; when they
    change, the training and validation steps are traced again. BestWeights compares val_loss across both
    sizes: a schedule decaying to the end (cosine, one-cycle) keeps a last epoch. Not under several workers
    (``distributed.fit_replicated`` keeps the steps it traced).
    """

    def __init__(self, epochs: int, image_size: int, crop: int = 0):
        super().__init__()
        self.epochs, self.small = int(epochs), (int(image_size), int(crop or image_size))
        self.built: tuple[int, int] | None = None

    def _layers(self):
        try:
            return self.model.get_layer("resize"), self.model.get_layer("crop")
        except ValueError:
            raise ValueError(
                f"{self.model.name}: progressive resizing needs layers named 'resize' and 'crop' "
                "(build_emotion_model(..., resizable=True))"
            ) from None

    def pixels(self, epoch: int) -> int:
        """Pixels of a face the network convolves in ``epoch`` (after training began): what an epoch costs."""
        return (self.small if epoch < self.epochs else self.built)[1] ** 2

    def sizes(self) -> tuple[int, int]:
        """(resized, cropped) pixels the network takes now."""
        resize, crop = self._layers()
        return int(resize.height), int(crop.height)

    def _use(self, sizes: tuple[int, int]) -> None:
        if sizes == self.sizes():
            return
        resize, crop = self._layers()
        resize.height = resize.width = sizes[0]
        crop.height = crop.width = sizes[1]
        self.model.make_train_function(force=True)
        self.model.make_test_function(force=True)

    def on_train_begin(self, logs=None):
        if self.built is None:  # a fit interrupted before on_train_end left the model small
            self.built = self.sizes()

    def on_epoch_begin(self, epoch, logs=None):
        self._use(self.small if epoch < self.epochs else self.built)

    def on_train_end(self, logs=None):
        self._use(self.built)
