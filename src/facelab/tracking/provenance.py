"""Where and how long a run ran: the machine facts and timings every MLflow stage run records.

The results table (``facelab results``) is built from these: a figure is only comparable with the
CPU model, the cores it had and the minutes it took beside it. Wall minutes are the stage's own
(not the whole pipeline's); CPU minutes add up every thread of the process, so on 2 cores a
training that keeps both busy shows about twice its wall minutes.

Where the wall minutes went: each stage times its phases (``with phase("load"):``, ``PhaseTimer``) and its
run records ``minutes.<phase>`` (``facelab results --phases``); a training run also records each epoch's
training and validation minutes (``epoch_timer``). MLflow only: timings differ run to run, so they never go
into the DVC-tracked metrics.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# MLflow tag names of the machine facts, metric names of the timings
CPU_MODEL_TAG, CORES_TAG = "facelab.cpu_model", "facelab.cores"
WALL_MINUTES, CPU_MINUTES = "run.wall_minutes", "run.cpu_minutes"
MINUTE_DECIMALS = 3
# Phase metrics are minutes.<phase>. The phases, in the order a stage runs them (the results table's order):
# reading inputs, building models, the epochs' training and validation (epoch_timer), the rest of fit (its
# checkpoints), recomputing batch-norm statistics, scoring, predicting, writing outputs, drawing pictures,
# the registry, logging to MLflow; "other" is the run's time in no phase.
PHASE_PREFIX = "minutes."
TRAIN_PHASE, VALIDATE_PHASE, OTHER_PHASE = "train", "validate", "other"
PHASES = (
    "load",
    "build",
    "augment",
    TRAIN_PHASE,
    VALIDATE_PHASE,
    "checkpoints",
    "recompute_batchnorm",
    "score",
    "predict",
    "save",
    "pictures",
    "register",
    "log",
    OTHER_PHASE,
)
# per-epoch step metrics of a training run, by the phase they add to
EPOCH_MINUTES = {TRAIN_PHASE: "epoch.train_minutes", VALIDATE_PHASE: "epoch.val_minutes"}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on (its affinity), which a container or ``taskset`` may limit."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_tags() -> dict[str, str]:
    return {CPU_MODEL_TAG: cpu_model(), CORES_TAG: str(usable_cores())}


@dataclass
class Stopwatch:
    """Wall and CPU time (all threads of this process) since it was made."""

    wall_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.process_time)

    def minutes(self) -> dict[str, float]:
        return {
            WALL_MINUTES: round((time.perf_counter() - self.wall_start) / 60, 3),
            CPU_MINUTES: round((time.process_time() - self.cpu_start) / 60, 3),
        }


# --- phases: where a stage's minutes go ------------------------------------------------------


class PhaseTimer:
    """Wall seconds per named phase of one stage run (``with timer.phase("load"):``), and its stopwatch.

    A phase repeated adds up. A phase inside another counts for itself only: the outer one's minutes leave
    out the inner one's, so the phases never count a second twice and, with ``other`` (the run's time in no
    phase), add up to the run's wall minutes. A phase that raises still counts the time it took.
    ``clock`` (seconds) is for the tests.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.started = clock()
        self.stopwatch = Stopwatch()
        self.seconds: dict[str, float] = {}
        self._inner: list[float] = []  # per open phase, innermost last: the seconds its inner phases took

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.clock()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = self.clock() - start
            self._count(name, elapsed - self._inner.pop())
            if self._inner:
                self._inner[-1] += elapsed

    def add(self, name: str, seconds: float) -> None:
        """``seconds`` of phase ``name`` timed elsewhere (an epoch's training, by a Keras callback): inside the
        phase open now, if any, and taken out of that phase's own seconds."""
        self._count(name, seconds)
        if self._inner:
            self._inner[-1] += seconds

    def _count(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def minutes(self) -> dict[str, float]:
        """``minutes.<phase>`` of every phase that ran, and ``minutes.other``: the time since the timer started
        in no phase."""
        other = max(0.0, self.clock() - self.started - sum(self.seconds.values()))
        named = {**self.seconds, OTHER_PHASE: other}
        return {f"{PHASE_PREFIX}{name}": round(seconds / 60, MINUTE_DECIMALS) for name, seconds in named.items()}


_phases = PhaseTimer()  # the running stage's (``start_phases``); phases outside a stage run are counted, not logged


def start_phases() -> PhaseTimer:
    """A new timer for the stage starting now: ``phase`` and ``add_phase`` count into it from now on."""
    global _phases
    _phases = PhaseTimer()
    return _phases


def phase(name: str) -> contextlib.AbstractContextManager[None]:
    """``with phase("load"):`` times a phase of the running stage (``PhaseTimer.phase``)."""
    return _phases.phase(name)


def add_phase(name: str, seconds: float) -> None:
    _phases.add(name, seconds)


def epoch_timer(log: Callable[..., None], clock: Callable[[], float] = time.perf_counter):
    """A Keras callback timing each epoch's training (epoch begin to validation begin) and validation (test
    begin to test end; Keras's ``fit`` and ``distributed.fit_replicated`` both call these hooks), logged per
    epoch through ``log(metrics, step=epoch + 1)`` as ``epoch.train_minutes`` and ``epoch.val_minutes`` and
    added to the running stage's ``train`` and ``validate`` phases. The epoch's end (checkpoints, other
    callbacks) is in neither."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began, self.train_seconds, self.val_began, self.val_seconds = clock(), None, None, None

        def on_test_begin(self, logs=None):
            self.val_began = clock()
            if self.train_seconds is None:
                self.train_seconds = self.val_began - self.began

        def on_test_end(self, logs=None):
            self.val_seconds = (self.val_seconds or 0.0) + clock() - self.val_began

        def on_epoch_end(self, epoch, logs=None):
            if self.train_seconds is None:  # no validation this epoch
                self.train_seconds = clock() - self.began
            seconds = {TRAIN_PHASE: self.train_seconds, VALIDATE_PHASE: self.val_seconds}
            logged = {name: value for name, value in seconds.items() if value is not None}
            for name, value in logged.items():
                add_phase(name, value)
            log(
                {EPOCH_MINUTES[name]: round(value / 60, MINUTE_DECIMALS) for name, value in logged.items()},
                step=epoch + 1,
            )

    return EpochTimer()
