"""Sharpness-aware minimisation (SAM, Foret et al. 2021) for the last epochs of a training run.

Each SAM step takes two passes over the batch: the gradient ``g`` at the weights ``w``, then the
gradient at ``w + rho * g / ||g||`` (the nearby worst case), which the optimizer applies to ``w``.
It costs about twice a plain step, so ``SharpnessAware`` switches it on only from a given epoch:
Zhou et al. (ICLR 2025) find that SAM in the last few epochs of a run selects nearly as flat a
minimum as SAM throughout. The second pass leaves the BatchNorm moving statistics as the first
pass set them, as reference implementations do (they must describe ``w``, not ``w + e``).

Under several replicas (``facelab.nn.distributed``) the step is the one-device step on the global batch: the
first gradient is summed across the replicas (each replica's loss is its share of the global batch's, as Keras
scales it) before its norm is taken, so every replica moves by the same ``e`` and takes it back alike (each keeps
its own BatchNorm statistics, as in any step), and the optimizer sums the second gradient as it sums any. With one
replica nothing is summed: the step is as it always was (tests/model/test_replicas.py: two replicas, two workers).

Under ``mixed_float16`` the second gradient is that of the loss scaled by the ``LossScaleOptimizer`` Keras wraps
the optimizer in, which divides what it is given by that scale; the first needs no scale (only its direction is
used).
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


def _summed_across_replicas(gradients: list) -> list:
    """Every replica's ``gradients`` summed (an all-reduce: each replica gets the sum), ``None`` kept; with one
    replica, ``gradients`` themselves."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return gradients
    summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, [g for g in gradients if g is not None]))
    return [None if g is None else next(summed) for g in gradients]


def _whole_batch_loss(loss):
    """A replica's loss as the loss of the global batch (Keras divides it by the replicas): what the loss metric
    is given, as in Keras's own step."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * tf.cast(replicas, loss.dtype)


def sam_train_step(model: keras.Model, rho: float):
    """A ``train_step`` for ``model`` (compiled, TensorFlow backend) that takes SAM steps of radius ``rho``.

    Losses, metrics and sample weights are those of Keras's own step (this mirrors the TensorFlow
    ``train_step`` of Keras 3.15, private ``_compute_loss`` and ``_loss_tracker`` included, the loss scale and the
    replicas' share of the loss too); the metrics are those of the first pass (the weights as they are).
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
        model._loss_tracker.update_state(_whole_batch_loss(loss), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        gradients = _summed_across_replicas(tape.gradient(loss, weights))
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
            perturbed_loss = model.optimizer.scale_loss(perturbed_loss)  # mixed_float16's loss scale, else as it is
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
