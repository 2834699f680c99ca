"""Sharpness-aware minimisation (SAM, Foret et al. 2021) for the last epochs of a training run.

Each SAM step takes two passes over the batch: the gradient ``g`` at the weights ``w``, then the
gradient at ``w + rho * g / ||g||`` (the nearby worst case), which the optimizer applies to ``w``.
It costs about twice a plain step, so ``SharpnessAware`` switches it on only from a given epoch:
Zhou et al. (ICLR 2025) find that SAM in the last few epochs of a run selects nearly as flat a
minimum as SAM throughout. The second pass leaves the BatchNorm moving statistics as the first
pass set them, as reference implementations do (they must describe ``w``, not ``w + e``).

Single-device only (the gradient norm would have to be taken across replicas).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from facelab.nn.resnet import all_layers

EPSILON = 1e-12  # guards the division by the gradient norm


def _moving_statistics(model: keras.Model) -> list:
    """Every BatchNormalization layer's moving mean and variance, nested models included."""
    return [
        v
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


def sam_train_step(model: keras.Model, rho: float):
    """A ``train_step`` for ``model`` (compiled, TensorFlow backend) that takes SAM steps of radius ``rho``.

    Losses, metrics and sample weights are those of Keras's own step (this mirrors the TensorFlow
    ``train_step`` of Keras 3.15, private ``_compute_loss`` and ``_loss_tracker`` included); the metrics
    are those of the first pass (the weights as they are).
    """
    statistics = _moving_statistics(model)

    def loss_of(x, y, sample_weight):
        y_pred = model(x, training=True)
        return y_pred, model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = model.trainable_weights
        with tf.GradientTape() as tape:
            y_pred, loss = loss_of(x, y, sample_weight)
        model._loss_tracker.update_state(loss, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        gradients = tape.gradient(loss, weights)
        scale = rho / (tf.linalg.global_norm([g for g in gradients if g is not None]) + EPSILON)
        steps = [
            None if g is None else tf.cast(g, w.dtype) * tf.cast(scale, w.dtype) for w, g in zip(weights, gradients)
        ]
        kept = [tf.identity(v) for v in statistics]
        for w, step in zip(weights, steps):
            if step is not None:
                w.assign_add(step)
        with tf.GradientTape() as tape:
            _, perturbed_loss = loss_of(x, y, sample_weight)
        sharp_gradients = tape.gradient(perturbed_loss, weights)
        for w, step in zip(weights, steps):
            if step is not None:
                w.assign_sub(step)
        for v, value in zip(statistics, kept):
            v.assign(value)
        model.optimizer.apply_gradients(zip(sharp_gradients, weights))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


class SharpnessAware(keras.callbacks.Callback):
    """From epoch ``first_epoch`` (0-based) on, the model trains with SAM steps of radius ``rho``.

    A resumed run that starts at or after ``first_epoch`` switches at its first epoch.
    """

    def __init__(self, rho: float, first_epoch: int):
        super().__init__()
        self.rho, self.first_epoch = float(rho), int(first_epoch)
        self.active = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.active or epoch < self.first_epoch:
            return
        self.model.train_step = sam_train_step(self.model, self.rho)
        self.model.make_train_function(force=True)
        self.active = True
