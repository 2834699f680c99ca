"""Where and how long a run ran: the machine facts and timings every MLflow stage run records.

The results table (``facelab results``) is built from these: a figure is only comparable with the
CPU model, the cores it had and the minutes it took beside it. Wall minutes are the stage's own
(not the whole pipeline's); CPU minutes add up every thread of the process, so on 2 cores a
training that keeps both busy shows about twice its wall minutes.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# MLflow tag names of the machine facts, metric names of the timings
CPU_MODEL_TAG, CORES_TAG = "facelab.cpu_model", "facelab.cores"
WALL_MINUTES, CPU_MINUTES = "run.wall_minutes", "run.cpu_minutes"


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
