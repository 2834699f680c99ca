"""The moving average of the weights (``train_*.ema``): each epoch is validated on the average, and the
model ``training.fit`` returns is the average whose validation figure chose it."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from facelab import training  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype(np.float32)
Y = X @ np.arange(8, dtype=np.float32).reshape(4, 2) + RNG.normal(scale=0.5, size=(64, 2)).astype(np.float32)
EPOCHS = 6


def _linear():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))  # functional, as facelab's networks are


def _fit(tmp_path, ema):
    keras.utils.set_random_seed(0)
    model = _linear()
    model.compile(training.make_optimizer(0.05, "constant", 0.0, steps=EPOCHS * 4, ema=ema), "mse")
    train = tf.data.Dataset.from_tensor_slices((X[:48], Y[:48])).batch(12)
    val = tf.data.Dataset.from_tensor_slices((X[48:], Y[48:])).batch(16)
    best, history, _ = training.fit(
        model,
        train,
        val,
        epochs=EPOCHS,
        steps_per_epoch=4,
        images_per_epoch=48,
        folder=tmp_path / "run",
        resume=False,
        label="test",
        show_progress=False,
    )
    best.compile(loss="mse")
    return best, history, val, tmp_path / "run" / "best.weights.h5"


def test_the_returned_model_is_the_average_that_validation_scored(tmp_path):
    best, history, val, best_file = _fit(tmp_path, ema=0.8)
    assert training.averages_weights(best) is False  # returned uncompiled, then compiled without one
    scored = min(history["val_loss"])
    assert best.evaluate(val, verbose=0) == pytest.approx(scored, rel=1e-5)
    raw = _linear()
    raw.load_weights(best_file)  # the best epoch's raw weights, as the backups keep them
    raw.compile(loss="mse")
    assert raw.evaluate(val, verbose=0) != pytest.approx(scored, rel=1e-3)


def test_without_an_average_the_best_epochs_raw_weights_are_returned(tmp_path):
    best, history, val, _ = _fit(tmp_path, ema=0.0)
    assert best.evaluate(val, verbose=0) == pytest.approx(min(history["val_loss"]), rel=1e-5)
