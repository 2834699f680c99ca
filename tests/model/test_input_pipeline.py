"""input_pipeline.make_dataset: what batches the fit loop gets."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from facelab.nn.input_pipeline import images_per_epoch, make_dataset  # noqa: E402

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
    ((x, y),) = _batches(make_dataset(IMAGES[:2], TARGETS[:2], 2, shuffle=False, seed=0))
    np.testing.assert_array_equal(x[..., 0], IMAGES[:2].astype(np.float32))
    np.testing.assert_array_equal(y, TARGETS[:2])


def test_fit_reads_one_repeated_iterator_and_returns_the_best_epochs_weights(tmp_path):
    import keras

    from facelab.nn.training import fit

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    seen, weights_after = [], []

    class CountBatches(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(0)

        def on_train_batch_end(self, batch, logs=None):
            seen[-1] += 1

        def on_epoch_end(self, epoch, logs=None):
            weights_after.append([w.copy() for w in self.model.get_weights()])

    train = make_dataset(IMAGES, TARGETS, 4, shuffle=True, seed=0)
    val = make_dataset(IMAGES, TARGETS, 4, shuffle=False, seed=0)
    best, history, _ = fit(
        model,
        train,
        val,
        epochs=3,
        steps_per_epoch=2,
        images_per_epoch=8,
        folder=tmp_path / "run",
        resume=False,
        label="test",
        callbacks=[CountBatches()],
    )
    assert seen == [2, 2, 2] and int(model.optimizer.iterations) == 6
    assert history["epoch"] == [0, 1, 2] and all(np.isfinite(history["val_loss"]))
    best_epoch = int(np.argmin(history["val_loss"]))  # the returned model holds that epoch's weights
    for kept, recorded in zip(best.get_weights(), weights_after[best_epoch]):
        np.testing.assert_array_equal(kept, recorded)
    assert best is not model and getattr(best, "optimizer", None) is None  # saved without optimizer state


def _augmented_batches_digest(batches: int = 30) -> str:
    import hashlib

    import keras

    from facelab.data.augmentation import emotion_augmenter

    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (256, 24, 24), dtype=np.uint8)
    augmenter = emotion_augmenter(flip=True, rotation=0.05, shift=0.1, zoom=0.1, contrast=0.2, seed=0)
    ds = make_dataset(images, np.zeros(256, np.float32), 8, shuffle=True, seed=0, augmenter=augmenter).repeat()
    digest = hashlib.sha1()
    for x, _ in ds.take(batches):
        digest.update(np.asarray(x).tobytes())
    return digest.hexdigest()


def test_on_the_fly_augmentation_draws_the_same_faces_every_run():
    # With parallel map calls the layers' random draws interleave differently each run, and the
    # same parameters gave a different emotion model (and metrics) on every `dvc repro`.
    assert _augmented_batches_digest() == _augmented_batches_digest()


def test_random_erasing_covers_part_of_some_faces_and_only_when_asked():
    from facelab.data.augmentation import ERASED_AREA, emotion_augmenter

    faces = np.full((200, 48, 48, 1), 128.0, np.float32)
    off = emotion_augmenter(flip=True, rotation=0, shift=0, zoom=0, contrast=0, seed=0, erasing=0.0)
    assert [type(layer).__name__ for layer in off.layers] == ["RandomFlip"]

    on = emotion_augmenter(flip=False, rotation=0, shift=0, zoom=0, contrast=0, seed=0, erasing=1.0)
    changed = (np.asarray(on(faces, training=True)) != 128.0).mean(axis=(1, 2, 3))
    erased = changed[changed > 0]
    assert 0.25 < len(erased) / len(faces) < 0.75  # each face with a probability drawn in [0, 1]: half on average
    assert erased.max() <= ERASED_AREA[1] + 0.05  # a rectangle, never the whole face
    assert np.array_equal(np.asarray(on(faces, training=False)), faces)  # never at test time


def test_mixup_blends_each_face_and_its_label_alike_and_only_when_asked():
    from facelab.data.augmentation import emotion_mixer

    assert emotion_mixer(0.0, seed=0) is None
    n = 16
    shade = np.arange(n, dtype=np.float32) * 10  # face i is all one shade: 10 i
    faces = np.broadcast_to(shade[:, None, None, None], (n, 8, 8, 1)).copy()
    labels = np.eye(n, dtype=np.float32)
    mixed_faces, mixed_labels = (np.asarray(t) for t in emotion_mixer(0.4, seed=0)(faces, labels))
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, rtol=1e-5)
    # a face's new shade is its label's blend of the two shades
    np.testing.assert_allclose(mixed_faces[:, 0, 0, 0], mixed_labels @ shade, rtol=1e-4, atol=1e-3)
    assert np.ptp(mixed_faces, axis=(1, 2, 3)).max() < 1e-3  # whole faces blended, not patches
    assert (mixed_labels.max(axis=1) < 0.99).sum() >= n // 2  # most faces really are blends


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_mixup_runs_inside_the_training_dataset(precision):
    import keras

    from facelab.data.augmentation import emotion_mixer
    from facelab.nn.input_pipeline import make_dataset

    faces = np.random.default_rng(0).integers(0, 255, size=(64, 48, 48), dtype=np.uint8)
    labels = np.eye(4, dtype=np.float32)[np.arange(64) % 4]
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)  # the training stage sets it before the mixer is made
    try:
        ds = make_dataset(faces, labels, 32, shuffle=True, seed=0, mixer=emotion_mixer(0.4, seed=0))
        images, targets = next(iter(ds))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert images.dtype == targets.dtype == "float32"
    assert images.shape == (32, 48, 48, 1) and targets.shape == (32, 4)
    assert (np.asarray(targets).max(axis=1) < 0.99).any()
