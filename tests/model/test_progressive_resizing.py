"""Progressive resizing (``callbacks.ProgressiveResizing``, ``train_emotion.progressive``): the steps of the first
epochs are traced and run at the smaller size, the rest and the saved network at the size it was built with, a
resumed run takes up each epoch at the size an uninterrupted one would, and a network built resizable serves what
the plain one does."""

import itertools

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from facelab.nn import training  # noqa: E402
from facelab.nn.callbacks import AtomicBackupAndRestore, ProgressiveResizing  # noqa: E402
from facelab.nn.resnet import build_emotion_model  # noqa: E402
from tests.support.interruption import Interrupt, StopAfter  # noqa: E402

SIZE, CLASSES = 48, 3
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (16, SIZE, SIZE, 1)).astype(np.float32)
LABELS = np.eye(CLASSES, dtype=np.float32)[RNG.integers(0, CLASSES, 16)]


class SizeProbe(keras.layers.Layer):
    """Passes its input on and notes (training, height) each time a step is traced through it."""

    def __init__(self, seen, **kwargs):
        super().__init__(**kwargs)
        self.note = seen.append  # a list attribute would be copied into Keras's tracked list

    def call(self, x, training=False):
        if isinstance(x, tf.Tensor) and not tf.executing_eagerly():  # a traced step, not Keras's symbolic build
            self.note(("train" if training else "test", int(x.shape[1])))
        return x


def _probed_model(seen):
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Resizing(SIZE, SIZE, name="resize")(inputs)
    x = keras.layers.CenterCrop(40, 40, name="crop")(x)
    x = SizeProbe(seen)(x)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.01), "categorical_crossentropy")
    return model


def _fit(model, epochs, callbacks):
    model.fit(
        IMAGES, LABELS, batch_size=8, epochs=epochs, validation_data=(IMAGES, LABELS), verbose=0, callbacks=callbacks
    )


def _sizes(seen, step):
    """The heights ``step`` ("train" or "test") was traced at, in order, repeats and Keras's build left out."""
    from_fit = seen[next(i for i, (kind, _) in enumerate(seen) if kind == "train") :]
    return [height for height, _ in itertools.groupby(height for kind, height in from_fit if kind == step)]


def test_the_first_epochs_train_and_validate_at_the_smaller_size_and_the_network_ends_at_its_own():
    seen = []
    model = _probed_model(seen)
    _fit(model, 3, [ProgressiveResizing(epochs=2, image_size=32, crop=24)])
    assert _sizes(seen, "train") == _sizes(seen, "test") == [24, 40]
    assert len(seen) <= 6  # traced again once, not every epoch (a first trace of 24 and one of Keras's build)
    assert (model.get_layer("resize").height, model.get_layer("crop").height) == (SIZE, 40)
    config = {layer["config"]["name"]: layer["config"] for layer in model.get_config()["layers"]}
    assert (config["resize"]["height"], config["crop"]["height"]) == (SIZE, 40)  # what is saved
    assert model.predict(IMAGES[:2], verbose=0).shape == (2, CLASSES)


@pytest.mark.parametrize("stopped_after, sizes", [(1, [24, 40]), (3, [40])])
def test_a_resumed_run_takes_up_each_epoch_at_the_size_of_an_uninterrupted_one(tmp_path, stopped_after, sizes):
    folder = tmp_path / "backup"
    with pytest.raises(Interrupt):
        _fit(
            _probed_model([]),
            4,
            [ProgressiveResizing(2, 32, 24), AtomicBackupAndRestore(folder), StopAfter(stopped_after)],
        )
    seen = []
    _fit(_probed_model(seen), 4, [ProgressiveResizing(2, 32, 24), AtomicBackupAndRestore(folder)])
    assert _sizes(seen, "train") == sizes


def test_a_network_without_the_layers_is_refused():
    model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 1)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(CLASSES)]
    )
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="needs layers named 'resize' and 'crop'"):
        _fit(model, 1, [ProgressiveResizing(1, 32, 24)])


def test_a_resizable_network_serves_what_the_plain_one_does_and_needs_the_pool_head():
    plain = build_emotion_model(CLASSES, input_size=SIZE, image_size=SIZE, width=16, stem="stride2")
    resizable = build_emotion_model(CLASSES, input_size=SIZE, image_size=SIZE, width=16, stem="stride2", resizable=True)
    resizable.set_weights(plain.get_weights())  # the resize and crop layers hold no weights
    # training=False as facelab calls it: Keras's preprocessing layers default to training=True (serve/onnx_export.py)
    np.testing.assert_allclose(resizable(IMAGES[:4], training=False), plain(IMAGES[:4], training=False), atol=1e-6)
    with pytest.raises(ValueError, match="needs the 'pool' head"):
        build_emotion_model(CLASSES, input_size=SIZE, head="flatten", width=16, resizable=True)


def test_the_emotion_network_trains_through_fit_with_smaller_faces_first(tmp_path):
    model = build_emotion_model(
        CLASSES, input_size=SIZE, image_size=56, crop=48, width=16, stem="stride2", resizable=True
    )
    model.compile(training.make_optimizer(0.002, "cosine", 0.0, 6), "categorical_crossentropy", metrics=["accuracy"])
    train_ds = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).batch(8)
    best, history, _ = training.fit(
        model,
        train_ds,
        train_ds,
        epochs=3,
        steps_per_epoch=2,
        images_per_epoch=16,
        folder=tmp_path / "run",
        resume=False,
        label="test",
        show_progress=False,
        progressive={"epochs": 2, "image_size": 40, "crop": 32},
    )
    assert history["epoch"] == [0, 1, 2] and all(np.isfinite(history["val_loss"]))
    assert (best.get_layer("resize").height, best.get_layer("crop").height) == (56, 48)
    assert best.predict(IMAGES[:2], verbose=0).shape == (2, CLASSES)


def test_the_time_left_counts_a_small_epoch_at_its_cost(monkeypatch, capsys):
    from facelab.nn import callbacks

    clock = iter([0.0, 0.0, 60.0])  # train begins, epoch 1 begins, epoch 1 ends a minute later
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    small, full = 24**2, 48**2  # a 24 px epoch costs a quarter of a 48 px one
    progress = callbacks.ProgressWithEta(3, 100, "test", epoch_cost=lambda epoch: small if epoch < 2 else full)
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    progress.on_epoch_end(0)
    assert "ETA 5.0 min" in capsys.readouterr().out  # one small epoch and a full one left: 1 + 4 minutes
