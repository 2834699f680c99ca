"""``train_*.recompute_batchnorm`` (``training.recompute_batchnorm``): after training, a copy of the network whose
BatchNorm statistics are the mean of every batch's over the given faces, its weights and the original untouched."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from facelab.nn import training  # noqa: E402
from tests.support.networks import batchnorm_network  # noqa: E402

RNG = np.random.default_rng(0)
FACES = RNG.integers(0, 256, size=(40, 6, 6), dtype=np.uint8)
BATCH = 8


def _network():
    keras.utils.set_random_seed(0)
    model = batchnorm_network((6, 6, 1), hidden=None, momentum=0.9)  # statistics of the pixels themselves
    model.get_layer("bn").moving_mean.assign([-5.0])  # as a few unrepresentative batches would leave them
    model.get_layer("bn").moving_variance.assign([3.0])
    return model


def test_the_statistics_are_the_mean_over_every_batch_of_the_faces():
    model = _network()
    copy = training.recompute_batchnorm(model, FACES, BATCH, seed=0)
    order = np.random.default_rng(0).permutation(len(FACES))
    batches = FACES[order].astype(np.float64).reshape(-1, BATCH * 36)
    bn = copy.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), [batches.mean(axis=1).mean()], rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [batches.var(axis=1).mean()], rtol=1e-4)
    assert bn.momentum == 0.9  # training it further behaves as before


def test_the_weights_and_the_trained_network_are_left_as_they_were():
    model = _network()
    before = [w.copy() for w in model.get_weights()]
    copy = training.recompute_batchnorm(model, FACES, BATCH, seed=0)
    for kept, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(kept, now)
    trainable = {w.path: w.numpy() for w in model.trainable_weights}
    for w in copy.trainable_weights:
        np.testing.assert_array_equal(w.numpy(), trainable[w.path])
