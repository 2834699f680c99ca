"""Test-time averaging inside the saved model: saves, reloads in safe mode, equals the average by hand."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from facelab.data.augmentation import flip_keypoints  # noqa: E402
from facelab.nn import tta  # noqa: E402
from facelab.nn.resnet import build_emotion_model, build_keypoint_model  # noqa: E402


def _shift(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moved dx right and dy down, borders replicated (numpy, the reference)."""
    h, w = images.shape[1:3]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return images[:, rows][:, :, cols]


def _manual(model, images: np.ndarray, task: str, flip: bool, shift: int) -> np.ndarray:
    outputs = []
    for mirrored in (0, 1) if flip else (0,):
        base = images[:, :, ::-1] if mirrored else images
        for dx, dy in [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if shift else []):
            out = np.asarray(model(_shift(base, dx, dy), training=False), np.float64)
            if task == "keypoints":
                out = out.reshape(len(out), -1, 2) - np.array([dx, dy])
                out = out.reshape(len(out), -1)
                if mirrored:
                    out = flip_keypoints(out, images.shape[2])
            outputs.append(out)
    return np.mean(outputs, axis=0)


@pytest.mark.parametrize(
    "task, flip, shift", [("keypoints", True, 0), ("keypoints", True, 3), ("keypoints", False, 2), ("emotion", True, 2)]
)
def test_wrapped_model_saves_reloads_safely_and_equals_the_manual_average(tmp_path, task, flip, shift):
    keras.utils.set_random_seed(0)
    if task == "keypoints":
        model, size = build_keypoint_model(96, width=16), 96
    else:
        model, size = build_emotion_model(5, width=16), 48
    images = np.random.default_rng(0).uniform(0, 255, (3, size, size, 1)).astype(np.float32)
    wrapped = tta.wrap(model, task, flip=flip, shift_px=shift)
    assert wrapped.input_shape == model.input_shape and wrapped.output_shape == model.output_shape
    wrapped.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    expected = _manual(model, images, task, flip, shift)
    got = np.asarray(loaded(images, training=False))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    # The average differs from the single view: the views really are different faces.
    assert not np.allclose(got, np.asarray(model(images, training=False)), atol=1e-3)


def test_one_view_is_the_model_itself():
    model = build_emotion_model(3, width=16)
    assert tta.wrap(model, "emotion", flip=False, shift_px=0) is model
    assert tta.unwrap(model) is model


def test_unwrap_of_a_saved_wrapped_model_gives_the_trained_network_back(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_emotion_model(3, width=16)
    tta.wrap(model, "emotion", flip=True, shift_px=2).save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    network = tta.unwrap(loaded)
    assert network is not loaded and network.name == model.name
    images = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(network(images, training=False), model(images, training=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flip,shift", [(True, 2), (False, 3), (True, 0), (False, 0)])
def test_settings_of_a_saved_wrapped_model_are_the_ones_it_was_wrapped_with(tmp_path, flip, shift):
    model = build_emotion_model(3, width=16)
    tta.wrap(model, "emotion", flip=flip, shift_px=shift).save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    assert tta.settings(loaded) == {"flip": flip, "shift_px": shift}


def test_views_are_flip_times_shifts():
    assert tta.views(True, 0) == [(0, 0, 0), (1, 0, 0)]
    assert len(tta.views(True, 2)) == 10 and len(tta.views(False, 2)) == 5


def test_parts_are_the_settings_of_fewer_views_each_once_the_given_one_last():
    names = lambda flip, shift: [tta.label(**option) for option in tta.parts(flip, shift)]  # noqa: E731
    assert names(True, 2) == ["none", "flip", "shift2", "flip_shift2"]
    assert names(True, 0) == ["none", "flip"]
    assert names(False, 3) == ["none", "shift3"]
    assert names(False, 0) == ["none"]
    assert tta.parts(True, 2)[-1] == {"flip": True, "shift_px": 2}


def test_keypoint_mirror_views_map_back_about_the_axis_given(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_keypoint_model(96, width=16)
    images = np.random.default_rng(0).uniform(0, 255, (3, 96, 96, 1)).astype(np.float32)
    tta.wrap(model, "keypoints", flip=True, shift_px=0, mirror_axis=96.0).save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    plain = np.asarray(model(images, training=False), np.float64)
    mirrored = np.asarray(model(images[:, :, ::-1], training=False), np.float64)
    expected = (plain + flip_keypoints(mirrored, 96, "edges")) / 2
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), expected, rtol=1e-4, atol=1e-3)
    assert tta.axis(loaded) == 96.0


def test_the_default_axis_stays_out_of_a_saved_models_config():
    """Models wrapped with the pixel-centre axis save as they did before the axis was a setting."""
    wrapped = tta.wrap(build_keypoint_model(96, width=16), "keypoints", flip=True, shift_px=0)
    assert "axis" not in wrapped.get_layer("tta_average").get_config()
    assert tta.axis(wrapped) == 95.0
