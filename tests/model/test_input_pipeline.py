"""training.make_dataset: what batches the fit loop gets."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from facelab.training import images_per_epoch, make_dataset  # noqa: E402

IMAGES = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4)
TARGETS = np.arange(10, dtype=np.float32)


def _batches(ds):
    return [(np.asarray(x), np.asarray(y)) for x, y in ds]


def test_training_batches_are_full_and_evaluation_batches_keep_every_face():
    train = _batches(make_dataset(IMAGES, TARGETS, 4, shuffle=True, seed=0))
    assert [len(y) for _, y in train] == [4, 4] and images_per_epoch(10, 4) == 8
    assert train[0][0].dtype == np.float32 and train[0][0].shape == (4, 4, 4, 1)
    evaluation = _batches(make_dataset(IMAGES, TARGETS, 4, shuffle=False, seed=0))
    assert [len(y) for _, y in evaluation] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in evaluation]), TARGETS)


def test_a_training_set_smaller_than_a_batch_is_one_partial_batch():
    train = _batches(make_dataset(IMAGES[:3], TARGETS[:3], 4, shuffle=True, seed=0))
    assert [len(y) for _, y in train] == [3] and images_per_epoch(3, 4) == 3


def test_pixels_arrive_as_0_to_255_floats_with_their_targets():
    (x, y), = _batches(make_dataset(IMAGES[:2], TARGETS[:2], 2, shuffle=False, seed=0))
    np.testing.assert_array_equal(x[..., 0], IMAGES[:2].astype(np.float32))
    np.testing.assert_array_equal(y, TARGETS[:2])
