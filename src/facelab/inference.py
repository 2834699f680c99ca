"""Running trained models on arrays of faces: batched, compiled once, with optional flip averaging."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf

from facelab.augment import flip_images, flip_keypoints

BATCH_SIZE = 128


def _compiled(model: keras.Model):
    """A tf.function of the model in inference mode, cached on the model (model.predict is ~7x slower per call)."""
    fn = getattr(model, "_facelab_infer", None)
    if fn is None:
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        model._facelab_infer = fn
    return fn


def predict(model: keras.Model, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Model outputs for (N, H, W) or (N, H, W, 1) images of 0-255 pixels."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    infer = _compiled(model)
    outputs = [np.asarray(infer(tf.constant(images[i:i + batch_size], tf.float32)), np.float32)
               for i in range(0, len(images), batch_size)]
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)


def predict_keypoints(model: keras.Model, images: np.ndarray, tta_flip: bool = False) -> np.ndarray:
    """(N, 30) pixel coordinates; with ``tta_flip`` averaged with the mirrored prediction of the mirrored face."""
    pred = predict(model, images)
    if tta_flip:
        mirrored = predict(model, flip_images(np.asarray(images)))
        pred = (pred + flip_keypoints(mirrored, images.shape[2])) / 2.0
    return pred


def predict_emotion(model: keras.Model, images: np.ndarray, tta_flip: bool = False) -> np.ndarray:
    """(N, classes) probabilities; with ``tta_flip`` averaged over the face and its mirror image."""
    probs = predict(model, images)
    if tta_flip:
        probs = (probs + predict(model, flip_images(np.asarray(images)))) / 2.0
    return probs


def input_size(model: keras.Model) -> int:
    return int(model.input_shape[1])


def resize_faces(images: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 faces resized to ``size`` x ``size`` (area interpolation when shrinking)."""
    if images.shape[1] == size:
        return images
    interpolation = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(face, (size, size), interpolation=interpolation) for face in images])
