"""Test-time averaging (TTA) baked into the saved model: what is served is what was scored.

``wrap(model, task, flip=..., shift_px=...)`` returns a Keras model with the same input that
runs ``model`` on several views of each face and returns their average (``unwrap`` gives
``model`` back and ``settings`` the arguments it was wrapped with, to score other settings or
another network without retraining; ``parts`` lists the settings made of fewer of its views, as the
training stages score them on validation):

* views = {the face, its mirror image if ``flip``} x {no shift, and if ``shift_px`` > 0 the four
  shifts (+-s, 0) and (0, +-s)}, shifted with edge-replicated borders;
* ``task="emotion"``: the mean of the views' class probabilities;
* ``task="keypoints"``: each view's coordinates mapped back to the face's own frame first
  (shift subtracted; mirror: x -> a - x and every left/right keypoint swapped with
  ``formats.FLIP_PERMUTATION``, as ``augmentation.flip_keypoints`` does; ``a`` is ``mirror_axis``,
  by default W - 1: ``formats.mirror_axis`` of the data's coordinates), then averaged.

The averaging runs in float32 whatever precision the wrapped model computes in. Both layers are
registered Keras serialisables (package ``facelab``, no Lambda layers), so a wrapped model saves to
``.keras`` and loads with ``safe_mode=True``. The training stages wrap the best model before
saving and registering it; everything downstream (evaluate, combine, ``facelab predict``, the
served pyfunc) just runs the model.
"""

from __future__ import annotations

import keras
from keras import ops

from facelab.formats import FLIP_PERMUTATION

TASKS = ("emotion", "keypoints")


def views(flip: bool, shift_px: int) -> list[tuple[int, int, int]]:
    """The views as (mirrored 0/1, dx, dy): the content moves dx pixels right and dy pixels down."""
    shifts = [(0, 0)]
    if shift_px > 0:
        shifts += [(shift_px, 0), (-shift_px, 0), (0, shift_px), (0, -shift_px)]
    return [(mirrored, dx, dy) for mirrored in ((0, 1) if flip else (0,)) for dx, dy in shifts]


def _shift_index(size: int, delta: int):
    """Gather indices for a shift by ``delta`` with edge replication: out[i] = in[clip(i - delta)]."""
    return ops.clip(ops.arange(size) - delta, 0, size - 1)


@keras.saving.register_keras_serializable(package="facelab")
class TtaViews(keras.layers.Layer):
    """(B, H, W, C) faces -> (V * B, H, W, C): every view of every face, view-major."""

    def __init__(self, views: list, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.views = [tuple(int(v) for v in view) for view in views]

    def call(self, images):
        height, width = images.shape[1], images.shape[2]
        out = []
        for mirrored, dx, dy in self.views:
            view = ops.flip(images, axis=2) if mirrored else images
            if dx:
                view = ops.take(view, _shift_index(width, dx), axis=2)
            if dy:
                view = ops.take(view, _shift_index(height, dy), axis=1)
            out.append(view)
        return ops.concatenate(out, axis=0) if len(out) > 1 else out[0]

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] * len(self.views)
        return (batch, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "views": [list(v) for v in self.views]}


@keras.saving.register_keras_serializable(package="facelab")
class TtaAverage(keras.layers.Layer):
    """(V * B, K) outputs of the views -> (B, K): mapped back to the face's frame (keypoints), averaged."""

    def __init__(
        self,
        views: list,
        task: str,
        width: int = 0,
        permutation: list | None = None,
        axis: float | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.views = [tuple(int(v) for v in view) for view in views]
        self.task, self.width = task, int(width)
        self.permutation = list(permutation if permutation is not None else FLIP_PERMUTATION)
        self.axis = float(self.width - 1 if axis is None else axis)  # the mirror: x -> axis - x

    def call(self, outputs):
        outputs = ops.cast(outputs, "float32")
        per_view = ops.reshape(outputs, (len(self.views), -1, outputs.shape[-1]))
        if self.task == "emotion":
            return ops.mean(per_view, axis=0)
        back = []
        for index, (mirrored, dx, dy) in enumerate(self.views):
            points = ops.reshape(per_view[index], (-1, len(self.permutation), 2))
            points = points - ops.convert_to_tensor([float(dx), float(dy)], "float32")
            if mirrored:
                x, y = points[..., 0], points[..., 1]
                points = ops.stack([self.axis - x, y], axis=-1)
                points = ops.take(points, self.permutation, axis=1)
            back.append(ops.reshape(points, (-1, 2 * len(self.permutation))))
        return ops.mean(ops.stack(back, axis=0), axis=0)

    def compute_output_shape(self, input_shape):
        return (None, input_shape[-1])

    def get_config(self):
        config = {
            **super().get_config(),
            "views": [list(v) for v in self.views],
            "task": self.task,
            "width": self.width,
            "permutation": self.permutation,
        }
        if self.axis != self.width - 1:  # files saved before the axis was a setting stay byte for byte the same
            config["axis"] = self.axis
        return config


def wrap(model: keras.Model, task: str, flip: bool, shift_px: int, mirror_axis: float | None = None) -> keras.Model:
    """``model`` with test-time averaging over its views, as one model of the same input and output shape.

    With a single view (no flip, no shift) ``model`` itself is returned. ``mirror_axis``: keypoints' mirror
    x -> mirror_axis - x (default: the width - 1 of pixel centres on whole numbers).
    """
    chosen = views(flip, shift_px)
    if len(chosen) == 1:
        return model
    inputs = keras.Input(model.input_shape[1:], name="image")
    stacked = TtaViews(chosen, name="tta_views")(inputs)
    average = TtaAverage(chosen, task, width=int(model.input_shape[2]), axis=mirror_axis, name="tta_average")
    outputs = average(model(stacked))
    return keras.Model(inputs, outputs, name=f"{model.name}_tta")


def unwrap(model: keras.Model) -> keras.Model:
    """The network a ``wrap`` model averages over its views (``model`` itself when it averages nothing)."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner[0] if inner else model


def label(flip: bool, shift_px: int) -> str:
    """A setting's short name, usable in an MLflow metric's name: ``none``, ``flip``, ``shift2``, ``flip_shift2``."""
    parts = (["flip"] if flip else []) + ([f"shift{int(shift_px)}"] if shift_px > 0 else [])
    return "_".join(parts) or "none"


def parts(flip: bool, shift_px: int) -> list[dict]:
    """The settings made of some of this one's views: none, the mirror image alone, the shifts alone, then
    this one (each once), to see what each kind of view adds."""
    chosen = []
    for mirrored, shift in ((False, 0), (flip, 0), (False, shift_px), (flip, shift_px)):
        option = {"flip": bool(mirrored), "shift_px": int(shift)}
        if option not in chosen:
            chosen.append(option)
    return chosen


def axis(model: keras.Model) -> float | None:
    """The keypoints' mirror axis a ``wrap`` model maps its mirror views back with (None when it averages nothing)."""
    layers = [layer for layer in model.layers if isinstance(layer, TtaAverage)]
    return layers[0].axis if layers else None


def settings(model: keras.Model) -> dict:
    """The ``flip`` and ``shift_px`` that ``wrap`` made ``model`` with (neither when it averages nothing)."""
    chosen = [layer.views for layer in model.layers if isinstance(layer, TtaViews)]
    if not chosen:
        return {"flip": False, "shift_px": 0}
    return {"flip": any(mirrored for mirrored, _, _ in chosen[0]), "shift_px": max(abs(dx) for _, dx, _ in chosen[0])}
