"""The tf.data input pipelines the training stages feed their networks with.

``make_dataset`` turns uint8 (N, H, W) images and their targets into batches of float32 (B, H, W, 1) 0-255 pixels,
augmented (and mixed) one batch at a time for training; ``images_per_epoch`` says how many faces a shuffled one
yields per epoch; ``as_float_images`` is the uint8-to-float conversion every batch goes through.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def as_float_images(images):
    """uint8 (N, H, W) images -> float32 (N, H, W, 1) 0-255 pixels, what the networks take."""
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
        x = as_float_images(x)
        if augmenter is not None:
            x = augmenter(x, training=True)
        if mixer is not None:
            x, y = mixer(x, y)
        return (x, y, *rest)

    return ds.map(to_model_input).prefetch(AUTOTUNE)  # sequential: reproducible random draws


def images_per_epoch(n_images: int, batch_size: int) -> int:
    """Faces a shuffled ``make_dataset`` yields per epoch (full batches only, when there is one)."""
    return n_images - n_images % batch_size if n_images >= batch_size else n_images
