"""Mixed precision (facelab.nn.precision.set_precision): a few training steps of the keypoint ResNet-18 under
mixed_float16 (loss scaling) and mixed_bfloat16, on the CPU: finite loss, weights that move, a model that reloads.

The rest of the suite trains in float32 only; these are the policies ``precision: auto`` picks on a GPU
(mixed_float16) and on a CPU with bf16 instructions (mixed_bfloat16).
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from facelab.nn import input_pipeline, precision, training  # noqa: E402
from facelab.nn.resnet import build_keypoint_model  # noqa: E402

FACES, BATCH, STEPS = 16, 8, 10


@pytest.fixture
def policy(request):
    name = precision.set_precision(request.param)
    yield name
    keras.mixed_precision.set_global_policy("float32")


def _faces():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(FACES, 96, 96), dtype=np.uint8)
    keypoints = rng.uniform(20, 76, size=(FACES, 30)).astype(np.float32)
    keypoints[0, :4] = np.nan  # a missing keypoint, as with data.keypoints.missing: mask
    return images, keypoints


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
def test_a_few_steps_train_save_and_reload(policy, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_keypoint_model(96, width=8, stem="stride2")
    model.compile(optimizer=training.make_optimizer(1e-3, "cosine", 1e-4, STEPS), loss=training.masked_mse)
    compute = {layer.dtype_policy.compute_dtype for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert compute == {policy.removeprefix("mixed_")}
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # variables stay float32
    # Keras wraps the optimizer for float16 only (bfloat16 has float32's exponent range: no scaling needed).
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    kernel = next(v for v in model.trainable_variables if "conv" in v.path)
    before = np.array(kernel.numpy())

    images, keypoints = _faces()
    dataset = input_pipeline.make_dataset(images, keypoints, BATCH, shuffle=True, seed=0)
    history = model.fit(dataset.repeat(), steps_per_epoch=STEPS, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert not np.allclose(kernel.numpy(), before)
    if policy == "mixed_float16":
        # The first scaled gradients overflow float16 (a loss of ~1900 px^2 times 2^15): those steps are skipped
        # and the scale halved until they fit (7 steps here, to 256), then the weights move.
        scale = float(model.optimizer.dynamic_scale.numpy())
        assert 0 < scale < model.optimizer.initial_scale
        assert 0 < int(model.optimizer.iterations.numpy()) < STEPS

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    x = images[:2, :, :, None].astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(reloaded(x, training=False)), np.asarray(model(x, training=False)), rtol=1e-3, atol=1e-2
    )
    assert reloaded.get_layer("keypoints").dtype_policy.compute_dtype == "float32"  # the head stays float32
