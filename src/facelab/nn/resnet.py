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

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

STAGE_FILTERS = (1, 2, 4, 8)  # multiples of `width`: 64/128/256/512 at width 64
BLOCKS_PER_STAGE = 2
KERNEL_INIT = "he_normal"
KEYPOINT_HEADS = ("dense", "flatten", "softargmax")  # global pool + dense | 3x3 map flattened + dense | heatmaps
EMOTION_HEADS = ("pool", "flatten")  # global average pool + dense | the last map flattened + dense (keeps where)
BN_MOMENTUM = 0.9  # moving statistics settle within tens of steps (Keras default 0.99 needs hundreds)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, l2: float, zero_scale: bool = False):
    """Convolution (no bias) + BatchNorm; ``zero_scale``: the BatchNorm scale starts at 0 (output 0)."""
    reg = keras.regularizers.L2(l2) if l2 else None
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=KERNEL_INIT,
        kernel_regularizer=reg,
        name=f"{name}_conv",
    )(x)
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM, gamma_initializer="zeros" if zero_scale else "ones", name=f"{name}_bn"
    )(x)


def conv_block(x, filters: int, stride: int, name: str, l2: float = 0.0, zero_init: bool = False):
    """Residual block whose shortcut is a 1x1 projection (width change and/or downsampling).

    ``zero_init``: the branch's last BatchNorm scale starts at 0, so the block starts as its shortcut
    alone (Goyal et al. 2017, "zero-gamma").
    """
    shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", l2)
    x = _conv_bn(x, filters, 3, stride, f"{name}_a", l2)
    x = layers.ReLU(name=f"{name}_a_relu")(x)
    x = _conv_bn(x, filters, 3, 1, f"{name}_b", l2, zero_init)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def identity_block(x, filters: int, name: str, l2: float = 0.0, zero_init: bool = False):
    """Residual block whose shortcut is the input itself; with ``zero_init`` it starts as the identity."""
    shortcut = x
    x = _conv_bn(x, filters, 3, 1, f"{name}_a", l2)
    x = layers.ReLU(name=f"{name}_a_relu")(x)
    x = _conv_bn(x, filters, 3, 1, f"{name}_b", l2, zero_init)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet18_stages(inputs, width: int = 64, stem: str = "imagenet", l2: float = 0.0, zero_init: bool = False) -> list:
    """ResNet-18 on a tensor of raw 0-255 pixels; returns the output map of each of the 4 stages.

    ``zero_init``: every block starts as its shortcut (see ``conv_block``).
    """
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
    maps = []
    for stage, multiple in enumerate(STAGE_FILTERS, start=1):
        filters = width * multiple
        stride = 1 if stage == 1 else 2
        # Stage 1 keeps the stem's width and resolution, so its first block needs no projection.
        if stage == 1:
            x = identity_block(x, filters, f"stage{stage}_block1", l2, zero_init)
        else:
            x = conv_block(x, filters, stride, f"stage{stage}_block1", l2, zero_init)
        for block in range(2, BLOCKS_PER_STAGE + 1):
            x = identity_block(x, filters, f"stage{stage}_block{block}", l2, zero_init)
        maps.append(x)
    return maps


def resnet18_body(inputs, width: int = 64, stem: str = "imagenet", l2: float = 0.0, zero_init: bool = False):
    """ResNet-18 feature extractor on a tensor of raw 0-255 pixels; returns pooled features."""
    return layers.GlobalAveragePooling2D(name="pool")(resnet18_stages(inputs, width, stem, l2, zero_init)[-1])


def _last_map_features(inputs, flatten: bool, width: int, stem: str, l2: float, zero_init: bool):
    """The last stage's map, averaged over its positions (``resnet18_body``) or flattened (positions kept)."""
    if not flatten:
        return resnet18_body(inputs, width, stem, l2, zero_init)
    return layers.Flatten(name="flatten")(resnet18_stages(inputs, width, stem, l2, zero_init)[-1])


def all_layers(model: keras.Model):
    """Every layer of ``model``, those of nested models (a test-time averaging wrapper's network) included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def build_keypoint_model(
    image_size: int = 96,
    num_outputs: int = 30,
    width: int = 64,
    stem: str = "imagenet",
    dropout: float = 0.0,
    l2: float = 0.0,
    head: str = "dense",
    zero_init: bool = False,
) -> keras.Model:
    """ResNet-18 with a head of ``num_outputs`` pixel coordinates (``KEYPOINT_HEADS``)."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    if head == "softargmax":
        stages = resnet18_stages(inputs, width, stem, l2, zero_init)
        outputs = _softargmax_head(stages, image_size, num_outputs // 2, width)
        return keras.Model(inputs, outputs, name="facelab_keypoints_resnet18")
    if head not in KEYPOINT_HEADS:
        raise ValueError(f"unknown keypoint head {head!r}")
    x = _last_map_features(inputs, head == "flatten", width, stem, l2, zero_init)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    # The dense layer predicts coordinates centred and scaled to about [-1, 1]; map them to pixels.
    x = layers.Dense(num_outputs, dtype="float32", name="coords_unit")(x)
    half = image_size / 2.0
    outputs = layers.Rescaling(half, offset=half, dtype="float32", name="keypoints")(x)
    return keras.Model(inputs, outputs, name="facelab_keypoints_resnet18")


def _softargmax_head(maps: list, image_size: int, num_points: int, width: int):
    """Heatmaps on the stride-8 map (stage 2 + upsampled stages 3 and 4), one per keypoint -> expected x, y."""
    x = maps[-1]
    for stage in (3, 2):
        skip = maps[stage - 1]
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"head_up{stage}")(x)
        x = (
            layers.Cropping2D(
                ((0, x.shape[1] - skip.shape[1]), (0, x.shape[2] - skip.shape[2])), name=f"head_crop{stage}"
            )(x)
            if x.shape[1] != skip.shape[1]
            else x
        )
        x = _conv_bn(x, width * 2, 1, 1, f"head_lateral{stage}", 0.0) if x.shape[-1] != width * 2 else x
        x = layers.Add(name=f"head_add{stage}")([x, _conv_bn(skip, width * 2, 1, 1, f"head_skip{stage}", 0.0)])
        x = layers.ReLU(name=f"head_relu{stage}")(x)
    x = _conv_bn(x, width * 2, 3, 1, "head_mix", 0.0)
    x = layers.ReLU(name="head_mix_relu")(x)
    heatmaps = layers.Conv2D(num_points, 1, dtype="float32", name="heatmaps")(x)
    return SpatialSoftArgmax(image_size, dtype="float32", name="keypoints")(heatmaps)


@keras.saving.register_keras_serializable(package="facelab")
class SpatialSoftArgmax(layers.Layer):
    """(B, h, w, K) heatmap logits -> (B, 2K) expected (x, y) of each softmax-normalised map, in input pixels.

    Cell (i, j) of an ``h`` x ``w`` map over an ``image_size`` input stands for the pixel at its
    centre, ((j + 0.5) * image_size / w - 0.5, (i + 0.5) * image_size / h - 0.5) (DSNT, Nibali et al. 2018).
    """

    def __init__(self, image_size: int, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)

    def call(self, heatmaps):
        ops = keras.ops
        h, w, k = heatmaps.shape[1], heatmaps.shape[2], heatmaps.shape[3]
        flat = ops.reshape(ops.cast(heatmaps, "float32"), (-1, h * w, k))
        weights = ops.softmax(flat, axis=1)
        ys = (ops.arange(h, dtype="float32") + 0.5) * (self.image_size / h) - 0.5
        xs = (ops.arange(w, dtype="float32") + 0.5) * (self.image_size / w) - 0.5
        grid_x = ops.reshape(ops.tile(xs[None, :], (h, 1)), (1, h * w, 1))
        grid_y = ops.reshape(ops.tile(ys[:, None], (1, w)), (1, h * w, 1))
        x = ops.sum(weights * grid_x, axis=1)
        y = ops.sum(weights * grid_y, axis=1)
        return ops.reshape(ops.stack([x, y], axis=-1), (-1, 2 * k))

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


def build_emotion_model(
    num_classes: int,
    input_size: int = 48,
    image_size: int = 48,
    width: int = 64,
    stem: str = "small",
    dropout: float = 0.0,
    l2: float = 0.0,
    crop: int = 0,
    zero_init: bool = False,
    head: str = "pool",
    resizable: bool = False,
) -> keras.Model:
    """ResNet-18 with a softmax head; ``input_size`` pixels in, resized to ``image_size`` inside.

    ``head`` (``EMOTION_HEADS``): ``"pool"`` averages the last stage's map over its positions;
    ``"flatten"`` keeps each position's features (a 40 px crop at the stride-2 stem leaves a 3x3 map),
    so the dense layer can tell a feature at the mouth from the same one at the eyes.

    ``crop`` > 0: the network sees the centred ``crop`` x ``crop`` pixels of the resized face (the
    published FER2013 recipes' 40-44 px crops). Training's random translation moves the face under
    that window, so in training it is a random crop; at test time the centre one, and each shifted
    view of the test-time averaging another crop.

    ``resizable``: the ``resize`` and ``crop`` layers are there even where they change nothing, so training
    can show smaller faces first (``callbacks.ProgressiveResizing``); only with the ``"pool"`` head, whose
    weights do not depend on the map's size.
    """
    if crop > image_size:
        raise ValueError(f"crop ({crop}) must not exceed image_size ({image_size})")
    if head not in EMOTION_HEADS:
        raise ValueError(f"unknown emotion head {head!r}")
    if resizable and head != "pool":
        raise ValueError(f"a resizable network needs the 'pool' head, not {head!r}")
    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = inputs
    if image_size != input_size or resizable:
        x = layers.Resizing(image_size, image_size, name="resize")(x)
    if (crop and crop < image_size) or resizable:
        x = layers.CenterCrop(crop or image_size, crop or image_size, name="crop")(x)
    x = _last_map_features(x, head == "flatten", width, stem, l2, zero_init)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="emotion")(x)
    return keras.Model(inputs, outputs, name="facelab_emotion_resnet18")


def build_emotion_model_from(cfg: Mapping[str, Any], num_classes: int, input_size: int) -> keras.Model:
    """``build_emotion_model`` with the network settings of a ``train_emotion`` parameter section."""
    return build_emotion_model(
        num_classes,
        input_size=input_size,
        image_size=cfg["image_size"],
        crop=cfg["crop"],
        width=cfg["width"],
        stem=cfg["stem"],
        dropout=cfg["dropout"],
        zero_init=cfg["zero_init_residual"],
        head=cfg["head"],
        resizable=bool(cfg["progressive"]["epochs"]),
    )


def build_keypoint_model_from(cfg: Mapping[str, Any], image_size: int) -> keras.Model:
    """``build_keypoint_model`` with the network settings of a ``train_keypoints`` parameter section."""
    return build_keypoint_model(
        image_size,
        width=cfg["width"],
        stem=cfg["stem"],
        dropout=cfg["dropout"],
        head=cfg["head"],
        zero_init=cfg["zero_init_residual"],
    )
