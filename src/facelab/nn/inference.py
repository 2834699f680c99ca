"""Running a saved model on arrays of faces: the one code path of evaluate, combine, predict and the pyfunc.

``predict`` runs a model batched and compiled once. A saved facelab model already holds its
test-time averaging (``facelab.nn.tta``), so every caller gets the figures ``evaluate`` scored.
``load_model`` reads a ``.keras`` file in Keras safe mode; ``precision`` names the dtype policy
a model computes in.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from facelab.errors import FacelabError

# Imported for what they register: the Keras layers a saved facelab model can hold (its test-time averaging,
# the keypoint head's SpatialSoftArgmax), so every loader of a model finds them.
from facelab.nn import resnet as _model_layers  # noqa: F401
from facelab.nn import tta  # noqa: F401
from facelab.nn.resnet import all_layers

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
    outputs = [
        np.asarray(infer(tf.constant(images[i : i + batch_size], tf.float32)), np.float32)
        for i in range(0, len(images), batch_size)
    ]
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)


def load_model(path) -> keras.Model:
    """A ``.keras`` model file, uncompiled, in Keras safe mode (no arbitrary code on load)."""
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except FileNotFoundError:
        raise FacelabError(f"{path}: no such model file") from None


def precision(model: keras.Model) -> str:
    """The dtype policy the model's convolutions compute in (e.g. float32, mixed_bfloat16)."""
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            return layer.dtype_policy.name
    return model.dtype_policy.name


def input_size(model: keras.Model) -> int:
    return int(model.input_shape[1])
