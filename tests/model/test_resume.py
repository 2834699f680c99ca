"""Resumable training state (callbacks.AtomicBackupAndRestore): what an interrupted fit leaves behind,
what the next fit resumes from, and that a crash while saving never leaves a half-written state."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from facelab.nn.callbacks import AtomicBackupAndRestore, BestWeights  # noqa: E402
from tests.model.interruption import Interrupt, StopAfter  # noqa: E402

X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
Y = X @ np.arange(8, dtype=np.float32).reshape(4, 2)


class EpochsSeen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.weights_at_start = [], None

    def on_epoch_begin(self, epoch, logs=None):
        if self.weights_at_start is None:
            self.weights_at_start = [w.copy() for w in self.model.get_weights()]
        self.epochs.append(epoch)


def _model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def _interrupted_fit(folder, epochs_done):
    model = _model(0)
    with pytest.raises(Interrupt):
        model.fit(X, Y, epochs=10, verbose=0, callbacks=[AtomicBackupAndRestore(folder), StopAfter(epochs_done)])
    return model


def test_an_interrupted_fit_leaves_one_complete_state_named_by_state_json(tmp_path):
    folder = tmp_path / "backup"
    _interrupted_fit(folder, epochs_done=3)
    state = json.loads((folder / "state.json").read_text())
    assert state == {"epoch": 3, "weights": "epoch-0003.weights.h5"}
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0003.weights.h5", "state.json"]


def test_the_next_fit_resumes_at_the_saved_epoch_with_the_saved_weights_and_cleans_up(tmp_path):
    folder = tmp_path / "backup"
    interrupted = _interrupted_fit(folder, epochs_done=3)
    seen = EpochsSeen()
    _model(seed=1).fit(X, Y, epochs=5, verbose=0, callbacks=[AtomicBackupAndRestore(folder), seen])
    assert seen.epochs == [3, 4]
    for restored, saved in zip(seen.weights_at_start, interrupted.get_weights()):
        np.testing.assert_array_equal(restored, saved)
    assert not folder.exists()  # a finished fit forgets its resumable state


def test_a_crash_while_saving_keeps_the_previous_epoch_state(tmp_path, monkeypatch):
    folder = tmp_path / "backup"
    interrupted = _interrupted_fit(folder, epochs_done=2)
    model = _model(seed=1)

    def half_written_then_crash(filepath, **kwargs):
        with open(filepath, "wb") as fh:
            fh.write(b"\x89HDF half a file")
        raise Interrupt

    monkeypatch.setattr(model, "save_weights", half_written_then_crash)
    with pytest.raises(Interrupt):
        model.fit(X, Y, epochs=10, verbose=0, callbacks=[AtomicBackupAndRestore(folder)])
    assert json.loads((folder / "state.json").read_text())["epoch"] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0002.weights.h5", "state.json"]

    seen = EpochsSeen()
    _model(seed=2).fit(X, Y, epochs=3, verbose=0, callbacks=[AtomicBackupAndRestore(folder), seen])
    assert seen.epochs == [2]
    for restored, saved in zip(seen.weights_at_start, interrupted.get_weights()):
        np.testing.assert_array_equal(restored, saved)


def _fit_keeping_best(folder, epochs=2):
    backup = AtomicBackupAndRestore(folder / "backup")
    best = BestWeights(backup, folder / "best.weights.h5", folder / "best.json")
    _model(0).fit(X, Y, validation_data=(X, Y), epochs=epochs, verbose=0, callbacks=[backup, best])
    return json.loads((folder / "best.json").read_text())


def test_a_resumed_run_keeps_earlier_best_weights_that_it_does_not_beat(tmp_path):
    (tmp_path / "best.weights.h5").write_bytes(b"earlier best")
    (tmp_path / "best.json").write_text(json.dumps({"val_loss": 0.0, "epoch": 7}))
    assert _fit_keeping_best(tmp_path) == {"val_loss": 0.0, "epoch": 7}
    assert (tmp_path / "best.weights.h5").read_bytes() == b"earlier best"


def test_a_best_record_without_its_weights_file_is_ignored(tmp_path):
    # An older facelab kept best.keras beside best.json: its record must not block this run's best.
    (tmp_path / "best.json").write_text(json.dumps({"val_loss": 0.0, "epoch": 7}))
    record = _fit_keeping_best(tmp_path)
    assert record["epoch"] in (1, 2) and record["val_loss"] > 0
    assert (tmp_path / "best.weights.h5").stat().st_size > 1000
