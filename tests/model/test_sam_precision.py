"""Sharpness-aware steps (``facelab.nn.sam``) under ``mixed_float16``, the policy ``precision: auto`` picks on a GPU:
Keras wraps the optimizer in a ``LossScaleOptimizer``, which divides the gradients it is given by its loss scale,
so the step's second gradient must be taken of the scaled loss (``optimizer.scale_loss``). Taken of the loss
itself, as the step did before, every SAM step moved the weights ``scale`` times too little (2^15 at the start)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from facelab.nn import sam  # noqa: E402
from tests.support.networks import batchnorm_network  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype(np.float32)
Y = X @ np.arange(8, dtype=np.float32).reshape(4, 2) + RNG.normal(scale=0.5, size=(48, 2)).astype(np.float32)
LR, RHO = 0.1, 0.5
# Low enough that no float16 gradient of this network overflows (with Keras's 2^15 the first steps are skipped)
LOSS_SCALE = 2**6
# How far a float16 SAM step may be from the float32 one, relative to its largest change. Measured: 1.4e-3; with
# the gradient of the unscaled loss the step is 1/64 of it (0.98 away).
TOLERANCE = 1e-2


@pytest.fixture
def policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _sam_step_changes(policy: str, unscaled: bool = False) -> list[np.ndarray]:
    """How one SAM step on the whole of X changes each trainable weight, under ``policy``."""
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = batchnorm_network(momentum=0.5)
    optimizer = keras.optimizers.SGD(LR)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=LOSS_SCALE)
    model.compile(optimizer, "mse")
    if unscaled:  # the step before it scaled the loss
        model.optimizer.scale_loss = lambda loss: loss
    before = [w.numpy() for w in model.trainable_weights]
    model.train_step = sam.sam_train_step(model, RHO)
    model.make_train_function(force=True)
    model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    return [w.numpy() - b for w, b in zip(model.trainable_weights, before)]


def _relative_distance(changes: list[np.ndarray], reference: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(changes, reference))


def test_a_float16_sam_step_moves_the_weights_as_a_float32_one(policy):
    reference = _sam_step_changes("float32")
    assert _relative_distance(_sam_step_changes("mixed_float16"), reference) <= TOLERANCE
    assert _relative_distance(_sam_step_changes("mixed_float16", unscaled=True), reference) > TOLERANCE
