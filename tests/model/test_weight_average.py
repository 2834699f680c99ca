"""The moving average of the weights (``train_*.ema``, ``callbacks.WeightAverage``): each epoch is validated
on the average, BatchNorm statistics included, the model ``training.fit`` returns is the average whose
validation figure chose it, and an interrupted run resumes its average."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from facelab.nn import training  # noqa: E402
from tests.support.interruption import Interrupt, StopAfter  # noqa: E402
from tests.support.networks import batchnorm_network  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype(np.float32)
Y = X @ np.arange(8, dtype=np.float32).reshape(4, 2) + RNG.normal(scale=0.5, size=(64, 2)).astype(np.float32)
EPOCHS = 6


class RawWeights(keras.callbacks.Callback):
    """The weights the model trains with, as they are at each epoch's end."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(self.model.get_weights())


def _fit(folder, momentum, resume=False, callbacks=()):
    keras.utils.set_random_seed(0)
    model = batchnorm_network()
    model.compile(training.make_optimizer(0.05, "constant", 0.0, steps=EPOCHS * 4), "mse")
    train = tf.data.Dataset.from_tensor_slices((X[:48], Y[:48])).batch(12)
    val = tf.data.Dataset.from_tensor_slices((X[48:], Y[48:])).batch(16)
    best, history, _ = training.fit(
        model,
        train,
        val,
        epochs=EPOCHS,
        steps_per_epoch=4,
        images_per_epoch=48,
        folder=folder,
        resume=resume,
        label="test",
        show_progress=False,
        average_momentum=momentum,
        callbacks=callbacks,
    )
    best.compile(loss="mse")
    return best, history, val


def _raw_network(weights):
    raw = batchnorm_network()
    raw.set_weights(weights)
    raw.compile(loss="mse")
    return raw


def test_the_returned_model_is_the_average_that_validation_scored(tmp_path):
    raw = RawWeights()
    best, history, val = _fit(tmp_path / "run", momentum=0.8, callbacks=[raw])
    scored = min(history["val_loss"])
    assert best.evaluate(val, verbose=0) == pytest.approx(scored, rel=1e-5)
    best_epoch = int(np.argmin(history["val_loss"]))
    assert _raw_network(raw.epochs[best_epoch]).evaluate(val, verbose=0) != pytest.approx(scored, rel=1e-3)


def test_the_average_includes_the_batchnorm_statistics(tmp_path):
    raw = RawWeights()
    best, history, _ = _fit(tmp_path / "run", momentum=0.8, callbacks=[raw])
    trained = _raw_network(raw.epochs[int(np.argmin(history["val_loss"]))])
    for statistic in ("moving_mean", "moving_variance"):
        averaged = next(w for w in best.weights if statistic in w.path).numpy()
        assert not np.allclose(averaged, next(w for w in trained.weights if statistic in w.path).numpy())


def test_without_an_average_the_best_epochs_raw_weights_are_returned(tmp_path):
    best, history, val = _fit(tmp_path / "run", momentum=0.0)
    assert best.evaluate(val, verbose=0) == pytest.approx(min(history["val_loss"]), rel=1e-5)


def test_an_interrupted_run_resumes_its_average(tmp_path):
    uninterrupted, history, val = _fit(tmp_path / "once", momentum=0.8)
    with pytest.raises(Interrupt):
        _fit(tmp_path / "twice", momentum=0.8, callbacks=[StopAfter(3)])
    resumed, resumed_history, _ = _fit(tmp_path / "twice", momentum=0.8, resume=True)
    np.testing.assert_allclose(resumed_history["val_loss"], history["val_loss"], rtol=1e-4)
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
