"""ResNet-18 from scratch in Keras, and the two heads facelab puts on it.

The body is built from two residual blocks (He et al., 2016):

* ``conv_block``: two 3x3 convolutions with a 1x1 projection shortcut; it changes the
  width and (with stride 2) halves the resolution.
* ``identity_block``: two 3x3 convolutions with the input added back unchanged.

ResNet-18 = stem + 4 stages of 2 blocks (64/128/256/512 filters at ``width=64``) + global
average pooling. ``stem="imagenet"`` is the classic 7x7/2 convolution and 3x3/2 max-pool
(96x96 -> 24x24 before stage 1); ``stem="stride2"`` is one 3x3 convolution, stride 2 (48x48 ->
24x24); ``stem="small"`` is one 3x3 convolution, stride 1, for small inputs (4x the work of
``stride2``).

Models take raw pixel values (0-255, float32, shape (H, W, 1)) and scale them themselves, so
every caller feeds the same thing. The keypoint head outputs 30 pixel coordinates in the
input frame; the emotion head outputs class probabilities. Nothing here knows of MLflow or DVC.
"""

from __future__ import annotations

import keras
from keras import layers

STAGE_FILTERS = (1, 2, 4, 8)  # multiples of `width`: 64/128/256/512 at width 64
BLOCKS_PER_STAGE = 2
KERNEL_INIT = "he_normal"
BN_MOMENTUM = 0.9  # moving statistics settle within tens of steps (Keras default 0.99 needs hundreds)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, l2: float):
    reg = keras.regularizers.L2(l2) if l2 else None
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer=KERNEL_INIT, kernel_regularizer=reg, name=f"{name}_conv")(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)


def conv_block(x, filters: int, stride: int, name: str, l2: float = 0.0):
    """Residual block whose shortcut is a 1x1 projection (width change and/or downsampling)."""
    shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", l2)
    x = _conv_bn(x, filters, 3, stride, f"{name}_a", l2)
    x = layers.ReLU(name=f"{name}_a_relu")(x)
    x = _conv_bn(x, filters, 3, 1, f"{name}_b", l2)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def identity_block(x, filters: int, name: str, l2: float = 0.0):
    """Residual block whose shortcut is the input itself."""
    shortcut = x
    x = _conv_bn(x, filters, 3, 1, f"{name}_a", l2)
    x = layers.ReLU(name=f"{name}_a_relu")(x)
    x = _conv_bn(x, filters, 3, 1, f"{name}_b", l2)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet18_body(inputs, width: int = 64, stem: str = "imagenet", l2: float = 0.0):
    """ResNet-18 feature extractor on a tensor of raw 0-255 pixels; returns pooled features."""
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pixels")(inputs)
    if stem == "imagenet":
        x = _conv_bn(x, width, 7, 2, "stem", l2)
        x = layers.ReLU(name="stem_relu")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    elif stem == "stride2":
        x = _conv_bn(x, width, 3, 2, "stem", l2)
        x = layers.ReLU(name="stem_relu")(x)
    elif stem == "small":
        x = _conv_bn(x, width, 3, 1, "stem", l2)
        x = layers.ReLU(name="stem_relu")(x)
    else:
        raise ValueError(f"unknown stem {stem!r}")
    for stage, multiple in enumerate(STAGE_FILTERS, start=1):
        filters = width * multiple
        stride = 1 if stage == 1 else 2
        # Stage 1 keeps the stem's width and resolution, so its first block needs no projection.
        if stage == 1:
            x = identity_block(x, filters, f"stage{stage}_block1", l2)
        else:
            x = conv_block(x, filters, stride, f"stage{stage}_block1", l2)
        for block in range(2, BLOCKS_PER_STAGE + 1):
            x = identity_block(x, filters, f"stage{stage}_block{block}", l2)
    return layers.GlobalAveragePooling2D(name="pool")(x)


def build_keypoint_model(image_size: int = 96, num_outputs: int = 30, width: int = 64,
                         stem: str = "imagenet", dropout: float = 0.0, l2: float = 0.0) -> keras.Model:
    """ResNet-18 with a linear head of ``num_outputs`` pixel coordinates."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = resnet18_body(inputs, width, stem, l2)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    # The dense layer predicts coordinates centred and scaled to about [-1, 1]; map them to pixels.
    x = layers.Dense(num_outputs, dtype="float32", name="coords_unit")(x)
    half = image_size / 2.0
    outputs = layers.Rescaling(half, offset=half, dtype="float32", name="keypoints")(x)
    return keras.Model(inputs, outputs, name="facelab_keypoints_resnet18")


def build_emotion_model(num_classes: int, input_size: int = 48, image_size: int = 48, width: int = 64,
                        stem: str = "small", dropout: float = 0.0, l2: float = 0.0) -> keras.Model:
    """ResNet-18 with a softmax head; ``input_size`` pixels in, resized to ``image_size`` inside."""
    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = inputs
    if image_size != input_size:
        x = layers.Resizing(image_size, image_size, name="resize")(x)
    x = resnet18_body(x, width, stem, l2)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="emotion")(x)
    return keras.Model(inputs, outputs, name="facelab_emotion_resnet18")
