"""Commands a test runs in the background with their output in a file: start one, wait for a line of its
output while it runs, wait for its end (exit 0), and kill what still runs when the test fails."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

WAIT_S = 600
POLL_S = 0.5


def start(cmd: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """``cmd`` in ``cwd``, stdout and stderr to ``log`` (a file, not a pipe: nothing blocks on it)."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float = WAIT_S) -> str:
    """The first line of ``log`` holding ``text``, waited for while ``process`` runs (AssertionError if
    it ends first, or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in log.read_text(errors="replace").splitlines() if text in line]
        if found:
            return found[0]
        assert process.poll() is None, f"no {text!r} before it ended:\n{log.read_text()[-3000:]}"
        time.sleep(POLL_S)
    raise AssertionError(f"no {text!r} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def finish(process: subprocess.Popen, log: Path, timeout: float = WAIT_S) -> str:
    """Wait for ``process``; its output, after asserting it exited 0."""
    code = process.wait(timeout=timeout)
    output = log.read_text()
    assert code == 0, output[-4000:]
    return output


@contextlib.contextmanager
def killed_on_failure(processes: dict) -> Iterator[None]:
    """Kill what still runs of ``processes`` (the values that are processes) when the block fails."""
    try:
        yield
    except BaseException:
        for process in processes.values():
            if isinstance(process, subprocess.Popen) and process.poll() is None:
                process.kill()
        raise
