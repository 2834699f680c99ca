"""Phase minutes (``provenance.PhaseTimer``, ``phase``, ``epoch_timer``): counted on a clock the test moves."""

from __future__ import annotations

import pytest

from facelab.tracking import provenance
from facelab.tracking.provenance import PhaseTimer


class Clock:
    """A clock that stands still until the test moves it (seconds)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


def test_phases_add_up_to_the_timers_minutes_with_other():
    clock = Clock()
    timer = PhaseTimer(clock)
    with timer.phase("load"):
        clock.advance(2)
    clock.advance(4)  # in no phase
    with timer.phase("build"):
        clock.advance(3)
    with timer.phase("load"):  # a repeated phase adds up
        clock.advance(1)
    minutes = timer.minutes()
    assert minutes == {"minutes.load": 3.0, "minutes.build": 3.0, "minutes.other": 4.0}
    assert sum(minutes.values()) == 10.0  # the clock moved 10 minutes


def test_a_phase_inside_another_counts_for_itself_only():
    clock = Clock()
    timer = PhaseTimer(clock)
    with timer.phase("checkpoints"):
        clock.advance(1)
        with timer.phase("log"):
            clock.advance(2)
            with timer.phase("save"):
                clock.advance(3)
        timer.add("train", 5 * 60)  # timed elsewhere (an epoch callback) while "checkpoints" was open
        clock.advance(5)
        with timer.phase("log"):
            clock.advance(1)
    minutes = timer.minutes()
    assert minutes == {
        "minutes.save": 3.0,
        "minutes.log": 3.0,
        "minutes.train": 5.0,
        "minutes.checkpoints": 1.0,
        "minutes.other": 0.0,
    }
    # counting each phase's whole time instead (the outer one including the inner ones) would not add up
    inclusive = 12 + 2 + 3 + 3 + 1 + 5
    assert sum(minutes.values()) == 12.0 != inclusive


def test_a_phase_that_raises_still_counts_and_leaves_no_phase_open():
    clock = Clock()
    timer = PhaseTimer(clock)
    with pytest.raises(ValueError):
        with timer.phase("load"):
            clock.advance(1)
            with timer.phase("save"):
                clock.advance(2)
                raise ValueError("disk full")
    with timer.phase("log"):  # at the top level again: its time is taken out of no other phase
        clock.advance(4)
    assert timer.minutes() == {"minutes.save": 2.0, "minutes.load": 1.0, "minutes.log": 4.0, "minutes.other": 0.0}


def test_phase_counts_into_the_timer_of_the_stage_started_last(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(provenance, "_phases", PhaseTimer(clock))
    first = provenance._phases
    with provenance.phase("load"):
        clock.advance(1)
    second = provenance.start_phases()
    with provenance.phase("save"):
        pass
    provenance.add_phase("train", 60)
    assert set(first.seconds) == {"load"} and set(second.seconds) == {"save", "train"}
    assert second.seconds["train"] == 60


def test_epoch_timer_logs_each_epoch_and_adds_the_totals_to_train_and_validate(monkeypatch):
    clock = Clock()
    timer = PhaseTimer(clock)
    monkeypatch.setattr(provenance, "_phases", timer)
    logged = []
    callback = provenance.epoch_timer(lambda metrics, step: logged.append((step, metrics)), clock)
    with timer.phase("checkpoints"):
        for epoch, (train, val, rest) in enumerate([(2, 1, 0.5), (3, 2, 0.5)]):
            callback.on_epoch_begin(epoch)
            clock.advance(train)
            callback.on_test_begin()
            clock.advance(val)
            callback.on_test_end({"loss": 1.0})
            clock.advance(rest)  # the epoch's end: checkpoints and the other callbacks
            callback.on_epoch_end(epoch, {})
        callback.on_epoch_begin(2)  # an epoch without validation: training until its end
        clock.advance(4)
        callback.on_epoch_end(2, {})
    assert logged == [
        (1, {"epoch.train_minutes": 2.0, "epoch.val_minutes": 1.0}),
        (2, {"epoch.train_minutes": 3.0, "epoch.val_minutes": 2.0}),
        (3, {"epoch.train_minutes": 4.0}),
    ]
    assert timer.minutes() == {
        "minutes.train": 9.0,
        "minutes.validate": 3.0,
        "minutes.checkpoints": 1.0,
        "minutes.other": 0.0,
    }
