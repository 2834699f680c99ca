"""The one ResNet-18 and its two heads: shapes, shared body, serialisation, the masked loss."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from facelab.nn.resnet import build_emotion_model, build_keypoint_model  # noqa: E402
from facelab.nn.training import masked_mse  # noqa: E402


def _conv_layers(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_keypoint_model_outputs_30_pixel_coordinates():
    model = build_keypoint_model(96, width=16)
    out = model(np.zeros((2, 96, 96, 1), np.float32))
    assert out.shape == (2, 30)


def test_emotion_model_outputs_probabilities_and_resizes_its_input():
    model = build_emotion_model(5, input_size=48, image_size=64, width=16)
    out = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype(np.float32)))
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_emotion_model_crop_is_the_centre_at_test_time():
    """crop=40: the network sees the centred 40x40 pixels, so the 4-pixel border cannot change the answer."""
    keras.utils.set_random_seed(0)
    model = build_emotion_model(5, input_size=48, image_size=48, width=16, crop=40)
    faces = np.random.default_rng(2).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32)
    other_border = faces.copy()
    other_border[:, :4], other_border[:, -4:], other_border[:, :, :4], other_border[:, :, -4:] = 0, 255, 0, 255
    np.testing.assert_allclose(np.asarray(model(other_border)), np.asarray(model(faces)), rtol=1e-6)
    centre = faces.copy()
    centre[:, 20:28, 20:28] = 255 - centre[:, 20:28, 20:28]
    assert not np.allclose(np.asarray(model(centre)), np.asarray(model(faces)))
    with pytest.raises(ValueError, match="crop"):
        build_emotion_model(5, input_size=48, image_size=48, width=16, crop=56)


@pytest.mark.parametrize(("head", "features"), [("pool", 128), ("flatten", 3 * 3 * 128)])
def test_the_emotion_head_pools_the_last_map_or_keeps_its_positions(head, features):
    """A 40 px crop at the stride-2 stem leaves a 3x3 map of 8 x width channels: pooled, or flattened."""
    model = build_emotion_model(7, width=16, stem="stride2", crop=40, head=head)
    assert model.get_layer("emotion").kernel.shape == (features, 7)
    out = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32)))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_both_heads_share_the_same_resnet18_body():
    kp, em = build_keypoint_model(96, width=16), build_emotion_model(7, width=16)
    assert _conv_layers(kp) == _conv_layers(em)
    # stem + 8 blocks x 2 convs + 3 projection shortcuts = 20 convolutions (ResNet-18's 17 + 3 1x1)
    assert len(_conv_layers(kp)) == 20


def test_full_width_resnet18_has_about_11_million_parameters():
    model = build_keypoint_model(96, width=64)
    assert 11.0e6 < model.count_params() < 11.4e6


def test_model_survives_save_and_safe_mode_load(tmp_path):
    model = build_keypoint_model(96, width=16)
    x = np.random.default_rng(1).uniform(0, 255, (1, 96, 96, 1)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5)


def test_masked_mse_ignores_missing_targets():
    y_true = np.array([[1.0, np.nan, 3.0]], np.float32)
    y_pred = np.array([[2.0, 100.0, 3.0]], np.float32)
    assert float(np.asarray(masked_mse(y_true, y_pred))[0]) == pytest.approx(0.5)


def test_keypoint_model_can_fit_a_tiny_batch():
    """Behavioural: a few steps on 8 faces bring the loss down (the model can learn)."""
    keras.utils.set_random_seed(0)
    model = build_keypoint_model(96, width=16)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 96, 96, 1)).astype(np.float32)
    y = rng.uniform(20, 76, (8, 30)).astype(np.float32)
    model.compile(keras.optimizers.Adam(3e-3), masked_mse)
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first / 2


@pytest.mark.parametrize("head", ["dense", "flatten", "softargmax"])
def test_every_keypoint_head_gives_30_coordinates_and_reloads_in_safe_mode(head, tmp_path):
    model = build_keypoint_model(96, width=16, head=head)
    x = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 1)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    assert loaded(x).shape == (2, 30)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-4, atol=1e-3)


def test_soft_argmax_finds_the_peak_of_a_heatmap_in_input_pixels():
    from facelab.nn.resnet import SpatialSoftArgmax

    maps = np.full((1, 12, 12, 2), -50.0, np.float32)
    maps[0, 3, 7, 0] = 50.0  # row 3, column 7 of a stride-8 map over 96 px: x = 7.5 * 8 - 0.5, y = 3.5 * 8 - 0.5
    maps[0, 10, 0, 1] = 50.0
    points = np.asarray(SpatialSoftArgmax(96)(maps))[0]
    np.testing.assert_allclose(points, [59.5, 27.5, 3.5, 83.5], atol=1e-3)


def test_l1_and_wing_losses_ignore_missing_targets_and_grow_with_the_error():
    from facelab.nn.training import masked_l1, masked_wing

    y_true = np.array([[10.0, np.nan, 30.0]], np.float32)
    near = np.array([[11.0, 0.0, 30.0]], np.float32)
    far = np.array([[40.0, 0.0, 30.0]], np.float32)
    assert float(np.asarray(masked_l1(y_true, near))[0]) == pytest.approx(0.5)
    for loss in (masked_l1, masked_wing):
        assert float(np.asarray(loss(y_true, far))[0]) > float(np.asarray(loss(y_true, near))[0]) > 0
    # wing: log-shaped below its width (10 px), so a 1 px error weighs more than in L1
    assert float(np.asarray(masked_wing(y_true, near))[0]) > float(np.asarray(masked_l1(y_true, near))[0])


def test_one_cycle_rate_rises_then_falls_to_zero():
    from facelab.nn.training import OneCycle, make_optimizer

    schedule = OneCycle(0.1, 100)
    rates = [float(schedule(step)) for step in (0, 15, 60, 100)]
    assert rates[0] == pytest.approx(0.01) and rates[1] == pytest.approx(0.1) and rates[3] == pytest.approx(0.0)
    assert rates[1] > rates[2] > rates[3]
    optimizer = make_optimizer(0.1, "onecycle", 5e-4, 100, "sgd")
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov


def test_the_params_schema_offers_exactly_the_heads_and_losses_there_are():
    """config.SCHEMA stays free of Keras, so it names the choices again: this keeps the two lists equal."""
    from facelab.config import SCHEMA
    from facelab.nn.resnet import EMOTION_HEADS, KEYPOINT_HEADS
    from facelab.nn.training import KEYPOINT_LOSSES

    section = SCHEMA["train_keypoints"]
    assert section["head"][1] == "one of " + ", ".join(KEYPOINT_HEADS)
    assert section["loss"][1] == "one of " + ", ".join(KEYPOINT_LOSSES)
    assert SCHEMA["train_emotion"]["head"][1] == "one of " + ", ".join(EMOTION_HEADS)


def test_zero_init_residual_starts_every_block_as_its_shortcut():
    """zero_init: each residual branch's last BatchNorm scale is 0, every other scale 1, for both heads;
    so the identity blocks of stage 1 pass their input through unchanged at the start."""
    for build in (
        lambda z: build_keypoint_model(96, width=16, zero_init=z),
        lambda z: build_emotion_model(5, width=16, zero_init=z),
    ):
        zeroed, plain = build(True), build(False)
        branch_ends = [layer for layer in zeroed.layers if layer.name.endswith("_b_bn")]
        assert len(branch_ends) == 8  # one per block
        for layer in zeroed.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                expected = 0.0 if layer.name.endswith("_b_bn") else 1.0
                np.testing.assert_array_equal(np.asarray(layer.gamma), expected)
        assert all(np.all(np.asarray(layer.gamma) == 1.0) for layer in plain.layers if layer.name.endswith("_b_bn"))
    model = build_emotion_model(5, width=16, stem="stride2", zero_init=True)
    probe = keras.Model(model.input, [model.get_layer("stem_relu").output, model.get_layer("stage1_block2_out").output])
    stem_out, stage1_out = probe(np.random.default_rng(3).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32))
    np.testing.assert_allclose(np.asarray(stage1_out), np.asarray(stem_out), rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_weight_decay_on_kernels_leaves_batchnorm_and_biases_alone(optimizer):
    """weight_decay_on: all shrinks every weight; kernels only the convolution and dense kernels."""
    from facelab.nn.training import make_optimizer

    def shrunk_after_one_step(decay_on):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((4, 4, 1)),
                keras.layers.Conv2D(2, 3),
                keras.layers.BatchNormalization(),
                keras.layers.Flatten(),
                keras.layers.Dense(2),
            ]
        )
        for layer in model.layers:  # non-zero weights everywhere, so decay shows wherever it acts
            layer.set_weights([w + 1.0 for w in layer.get_weights()])
        opt = make_optimizer(0.1, "constant", 0.5, 10, optimizer, decay_on)
        before = {v.path: np.asarray(v).copy() for v in model.trainable_variables}
        opt.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
        return {v.path: not np.allclose(np.asarray(v), before[v.path]) for v in model.trainable_variables}

    every = shrunk_after_one_step("all")
    assert all(every.values()), every
    kernels = shrunk_after_one_step("kernels")
    assert {path for path, moved in kernels.items() if moved} == {p for p in kernels if p.endswith("kernel")}, kernels
