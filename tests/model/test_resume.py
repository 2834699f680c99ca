"""Resumable training state (callbacks.AtomicBackupAndRestore): what an interrupted fit leaves behind,
what the next fit resumes from, that a crash while saving never leaves a half-written state, and that a fit
(``training.fit``) interrupted and resumed ends with the weights and optimizer state of an uninterrupted one
(the step counter, hence the learning rate, and every moment), which a restart from scratch or a resume that reads
its batches from the start again would not. Two workers: tests/e2e/test_workers_in_step.py."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from facelab.nn.callbacks import AtomicBackupAndRestore, BestWeights  # noqa: E402
from tests.support import worker_steps  # noqa: E402
from tests.support.interruption import Interrupt, StopAfter  # noqa: E402

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


# --- the whole state: weights, optimizer, where the batches are ----------------------------------------------------
# A fit of RESUME_EPOCHS epochs interrupted after RESUMED_AFTER and resumed against the same fit uninterrupted
# (tests/support/worker_steps.py: a small dense network, float32, seeded, AdamW on a cosine schedule, shuffled
# batches, through training.fit), by the largest absolute difference over every weight and optimizer variable.
# Measured: 0.0 (bit for bit). A restart from scratch for the remaining 2 epochs: 0.020 on the weights (8 steps
# counted, not 16); a resume that restores everything but reads the batches from the start again (epoch 1's shuffle
# in epoch 3), as training.fit did before it skipped them: 0.0058 on the weights, 0.043 on the optimizer's moments.
RESUME_EPOCHS, RESUMED_AFTER = 4, 2
RESUME_TOLERANCE = 1e-6


def _trained_state(folder, epochs=RESUME_EPOCHS, resume=False, callbacks=()):
    model, train_ds, val_ds = worker_steps.setup(tf.distribute.get_strategy(), RESUME_EPOCHS)
    worker_steps.train(model, train_ds, val_ds, folder, epochs=epochs, resume=resume, callbacks=callbacks)
    return worker_steps.state(model)


def _resumed_state(folder):
    with pytest.raises(Interrupt):
        _trained_state(folder, callbacks=[StopAfter(RESUMED_AFTER)])
    assert json.loads((folder / "backup" / "state.json").read_text())["epoch"] == RESUMED_AFTER
    return _trained_state(folder, resume=True)


@pytest.fixture(scope="module")
def uninterrupted_state(tmp_path_factory):
    return _trained_state(tmp_path_factory.mktemp("uninterrupted"))


def test_a_resumed_fit_ends_with_the_weights_and_optimizer_state_of_an_uninterrupted_one(tmp_path, uninterrupted_state):
    resumed = _resumed_state(tmp_path / "run")
    steps = RESUME_EPOCHS * worker_steps.STEPS_PER_EPOCH
    assert int(resumed["iterations"]) == int(uninterrupted_state["iterations"]) == steps
    assert float(resumed["learning_rate"]) == float(uninterrupted_state["learning_rate"])  # the schedule's step
    assert worker_steps.distance(resumed, uninterrupted_state) <= RESUME_TOLERANCE  # moments included


def test_a_restart_from_scratch_for_the_remaining_epochs_misses_that_tolerance(tmp_path, uninterrupted_state):
    restarted = _trained_state(tmp_path / "run", epochs=RESUME_EPOCHS - RESUMED_AFTER)
    assert int(restarted["iterations"]) != int(uninterrupted_state["iterations"])
    assert worker_steps.distance(restarted, uninterrupted_state, "weight") > RESUME_TOLERANCE


def test_a_resume_that_starts_the_batches_again_misses_that_tolerance(tmp_path, uninterrupted_state, monkeypatch):
    # weights and optimizer restored, but the first batches of the run read again (training.fit skips none)
    monkeypatch.setattr(AtomicBackupAndRestore, "epochs_done", lambda self: 0)
    resumed = _resumed_state(tmp_path / "run")
    assert int(resumed["iterations"]) == int(uninterrupted_state["iterations"])
    assert worker_steps.distance(resumed, uninterrupted_state, "weight") > RESUME_TOLERANCE


def test_the_batches_after_a_skip_are_those_of_an_uninterrupted_run_augmentation_and_mixup_included():
    # what training.fit's skip rests on for the emotion stage: its random draws follow the batches made, not time
    from facelab.data.augmentation import emotion_augmenter, emotion_mixer
    from facelab.nn.input_pipeline import make_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8)
    labels = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 40)]

    def batches(skip, count):
        keras.utils.set_random_seed(42)  # as a new process starts
        augmenter = emotion_augmenter(True, 0.05, 0.1, 0.1, 0.3, seed=42, erasing=0.3)
        dataset = make_dataset(
            images, labels, 8, shuffle=True, seed=42, augmenter=augmenter, mixer=emotion_mixer(0.2, 42)
        )
        return [
            np.concatenate([x.numpy().ravel(), y.numpy().ravel()]) for x, y in dataset.repeat().skip(skip).take(count)
        ]

    uninterrupted = batches(0, 15)[10:]  # epoch 3 (5 batches an epoch)
    for made, resumed in zip(uninterrupted, batches(10, 5), strict=True):
        np.testing.assert_array_equal(made, resumed)
    restarted = batches(0, 5)
    assert all(np.abs(made - again).max() > 1 for made, again in zip(uninterrupted, restarted))
