"""Sharpness-aware minimisation (``train_*.sam_rho``, ``facelab.nn.sam``): a SAM step applies the gradient taken at
the perturbed weights ``w + rho * g / ||g||`` to ``w`` itself, leaves the BatchNorm statistics as the unperturbed
pass set them, and ``training.fit`` takes SAM steps only in the last ``sam_epochs`` epochs."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from facelab.nn import sam, training  # noqa: E402
from tests.support.networks import batchnorm_network  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype(np.float32)
Y = X @ np.arange(8, dtype=np.float32).reshape(4, 2) + RNG.normal(scale=0.5, size=(48, 2)).astype(np.float32)
LR, RHO = 0.1, 0.5


def _network():
    keras.utils.set_random_seed(0)
    model = batchnorm_network(momentum=0.5)
    model.compile(keras.optimizers.SGD(LR), "mse")
    return model


def _gradients(model, weights):
    """The gradient of the training-mode MSE at ``weights`` (the model's own weights are put back)."""
    kept = model.get_weights()
    for variable, value in zip(model.trainable_weights, weights):
        variable.assign(value)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(X, training=True) - Y))
    gradients = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    model.set_weights(kept)
    return gradients


def _moving_statistics(model):
    return [v.numpy() for v in model.non_trainable_weights]


def test_a_sam_step_applies_the_gradient_at_the_perturbed_weights():
    model = _network()
    start = [w.numpy() for w in model.trainable_weights]
    g = _gradients(model, start)
    norm = np.sqrt(sum(float(np.sum(x**2)) for x in g))
    sharp = _gradients(model, [w + RHO * x / norm for w, x in zip(start, g)])
    expected = [w - LR * x for w, x in zip(start, sharp)]
    plain = [w - LR * x for w, x in zip(start, g)]

    model.train_step = sam.sam_train_step(model, RHO)
    model.make_train_function(force=True)
    model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)

    after = [w.numpy() for w in model.trainable_weights]
    for got, want in zip(after, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(got, p, atol=1e-6) for got, p in zip(after, plain))  # not a plain step


def test_the_perturbed_pass_leaves_the_batchnorm_statistics_alone():
    plain, sharp = _network(), _network()
    plain.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    sharp.train_step = sam.sam_train_step(sharp, RHO)
    sharp.make_train_function(force=True)
    sharp.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    for got, want in zip(_moving_statistics(sharp), _moving_statistics(plain)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


class StepKind(keras.callbacks.Callback):
    """Whether each epoch trained with SAM steps."""

    def __init__(self):
        super().__init__()
        self.sharp = []

    def on_epoch_end(self, epoch, logs=None):
        self.sharp.append("sam_train_step" in getattr(self.model.train_step, "__qualname__", ""))


@pytest.mark.parametrize(("sam_epochs", "expected"), [(2, [False, False, True, True]), (0, [True] * 4)])
def test_fit_takes_sam_steps_in_the_last_epochs_only(tmp_path, sam_epochs, expected):
    model = _network()
    kinds = StepKind()
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(12)
    training.fit(
        model,
        data,
        data,
        epochs=4,
        steps_per_epoch=4,
        images_per_epoch=48,
        folder=tmp_path / "run",
        resume=False,
        label="test",
        show_progress=False,
        callbacks=[kinds],
        sam_rho=RHO,
        sam_epochs=sam_epochs,
    )
    assert kinds.sharp == expected
