"""Worker processes of a multi-worker training in the tests: their environment, waiting for them, ending them."""

from __future__ import annotations

import json
import subprocess

WORKER_TIMEOUT_S = 900  # a worker process's time limit in these tests (2 shared cores: minutes per stage)


def worker_env(env: dict, cluster: dict, index: int, tmp) -> dict:
    """The environment of worker ``index``: its TF_CONFIG, and its own TMPDIR (to see its folder removed)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        "TMPDIR": str(tmp),
        "FACELAB_WORKER_TIMEOUT": "300",
    }


def wait_for(workers: list[subprocess.Popen], timeout: float = WORKER_TIMEOUT_S) -> list[str]:
    try:
        return [worker.communicate(timeout=timeout)[0] for worker in workers]
    finally:
        kill_all(workers)


def kill_all(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def check_exit(workers, outputs) -> None:
    codes = [worker.returncode for worker in workers]
    assert codes == [0] * len(workers), f"workers exited {codes}:\n" + "\n---\n".join(o[-4000:] for o in outputs)
