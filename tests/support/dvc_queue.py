"""DVC's experiment queue driven from a test: start its workers, wait until it is idle, stop the workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from facelab.sandbox import run

QUEUE_TIMEOUT_S = 900
WORKER_EXIT_TIMEOUT_S = 60


def start_queue(path: Path, env: dict, jobs: int) -> None:
    """``dvc queue start`` with its output in a file, not pipes.

    DVC's queue workers are forked from this command and inherit its stdout/stderr; a worker that
    outlives the queue would keep captured pipes open and block the caller for as long as it lives.
    """
    with open(path / "queue-start.log", "ab") as log:
        subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)],
            cwd=path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=True,
        )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop_workers(path: Path, env: dict) -> None:
    """Stop the queue's workers and wait for them; kill any still alive after the timeout.

    A worker's idle monitor can decide the queue is empty while its own task still runs (its inspect
    call times out on a loaded machine); the shutdown it then sends can be lost and the worker idles on.
    """
    run(["dvc", "queue", "stop"], path, env, check=False, timeout=120)
    pid_texts = [f.read_text().strip() for f in (path / ".dvc/tmp/exps/celery").glob("*.pid")]
    pids = [int(text) for text in pid_texts if text]
    deadline = time.monotonic() + WORKER_EXIT_TIMEOUT_S
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for_queue(path: Path, env: dict, timeout_s: float = QUEUE_TIMEOUT_S) -> str:
    """``dvc queue status`` once nothing is running or queued any more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], path, env).stdout
        if "Running" not in status and "Queued" not in status:
            return status
        time.sleep(5)
    raise AssertionError(f"queue still busy after {timeout_s}s:\n{status}")
