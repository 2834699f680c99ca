"""Tiny networks for tests: facelab's two ResNets at width 16 (untrained, seeded), a small BatchNorm
network for the training mechanics (SAM, weight averaging, BatchNorm recomputation), and a small dense one
without BatchNorm (several workers against one replica, resumed training).

tests/conftest.py serves the ResNets as session fixtures (``tiny_keypoint_network``, ``tiny_emotion_network``);
build one here when a test needs its own copy to change."""

from __future__ import annotations

TINY_WIDTH = 16
TINY_EMOTION_CLASSES = ["anger", "disgust", "sadness", "happiness", "surprise"]
SEED = 0


def tiny_face_networks():
    """The keypoint and the emotion network (``TINY_EMOTION_CLASSES``) at width 16, seeded once, in that order."""
    import keras

    from facelab.nn.resnet import build_emotion_model, build_keypoint_model

    keras.utils.set_random_seed(SEED)
    keypoints = build_keypoint_model(width=TINY_WIDTH)
    return keypoints, build_emotion_model(len(TINY_EMOTION_CLASSES), width=TINY_WIDTH)


def batchnorm_network(input_shape: tuple[int, ...] = (4,), hidden: int | None = 8, momentum: float = 0.99, outputs=2):
    """Input, Dense(``hidden``, relu) unless None, BatchNormalization("bn"), Flatten for images, Dense(``outputs``):
    functional, as facelab's networks are. Not seeded: seed it first (``keras.utils.set_random_seed``)."""
    import keras

    inputs = keras.Input(input_shape)
    features = keras.layers.Dense(hidden, activation="relu")(inputs) if hidden else inputs
    features = keras.layers.BatchNormalization(momentum=momentum, name="bn")(features)
    if len(input_shape) > 1:
        features = keras.layers.Flatten()(features)
    return keras.Model(inputs, keras.layers.Dense(outputs)(features))


def dense_network(input_shape: tuple[int, ...] = (6, 6, 1), hidden: int = 8, outputs: int = 2):
    """Input (0-255 pixels), Rescaling to 0-1, Flatten, Dense(``hidden``, relu), Dense(``outputs``): no BatchNorm,
    so that several replicas' steps and one replica's on the same global batches agree to float rounding (a
    BatchNorm layer normalises each replica's share of the batch by its own statistics). Not seeded."""
    import keras

    inputs = keras.Input(input_shape)
    features = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    features = keras.layers.Dense(hidden, activation="relu")(features)
    return keras.Model(inputs, keras.layers.Dense(outputs)(features))
