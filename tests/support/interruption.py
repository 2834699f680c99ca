"""A Ctrl-C between epochs, for the tests of resumable training (test_resume, test_weight_average)."""

import pytest

keras = pytest.importorskip("keras")


class Interrupt(Exception):
    pass


class StopAfter(keras.callbacks.Callback):
    """Raises after the given number of epochs, as a Ctrl-C between epochs would."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise Interrupt
