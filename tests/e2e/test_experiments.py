"""Queued DVC experiments: two run at once in temporary copies, and both land in the one MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import make_project_copy, mlflow_client, run

pytestmark = pytest.mark.e2e
QUEUE_TIMEOUT_S = 900
WORKER_EXIT_TIMEOUT_S = 60


def _start_queue(path: Path, env: dict, jobs: int) -> None:
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


def _stop_workers(path: Path, env: dict) -> None:
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


def _wait_for_queue(path, env) -> str:
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], path, env).stdout
        if "Running" not in status and "Queued" not in status:
            return status
        time.sleep(5)
    raise AssertionError(f"queue still busy after {QUEUE_TIMEOUT_S}s:\n{status}")


def test_two_queued_experiments_run_concurrently_into_one_store(tmp_path):
    path, env = make_project_copy(tmp_path / "repo")
    run(
        ["dvc", "exp", "run", "--queue", "-S", "train_keypoints.lr=0.001,0.003", "-S", "train_emotion.dropout=0.1"],
        path,
        env,
    )
    _start_queue(path, env, jobs=2)
    try:
        status = _wait_for_queue(path, env)
    finally:
        _stop_workers(path, env)
    failed = [line.split()[1] for line in status.splitlines() if line.endswith("Failed")]
    logs = "".join(run(["dvc", "queue", "logs", name], path, env, check=False).stdout[-3000:] for name in failed)
    assert not failed, status + logs

    shown = json.loads(run(["dvc", "exp", "show", "--json"], path, env).stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    names, rmses = set(), set()
    for exp in experiments:
        for revision in exp["revs"]:
            data = revision["data"]
            lr = data["params"]["params.yaml"]["data"]["train_keypoints"]["lr"]
            rmse = data["metrics"]["metrics/evaluate.json"]["data"]["keypoints"]["rmse_px"]
            names.add(exp["name"])
            rmses.add((lr, rmse))
    assert len(names) == 2, shown
    assert {lr for lr, _ in rmses} == {0.001, 0.003}
    assert len({rmse for _, rmse in rmses}) == 2, "different learning rates gave identical metrics"

    # The runs executed in .dvc/tmp/exps copies, yet landed in the workspace's own store.
    client = mlflow_client(path)
    experiment = client.get_experiment_by_name("facelab")
    runs = client.search_runs([experiment.experiment_id])
    by_exp: dict[str, set[str]] = {}
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
        if "dvc.exp_name" in r.data.tags:
            by_exp.setdefault(r.data.tags["dvc.exp_name"], set()).add(r.info.run_name)
    assert set(by_exp) == names
    for stages in by_exp.values():
        assert {"prepare", "train_keypoints", "train_emotion", "evaluate", "combine"} <= stages
    for model in ("facelab-keypoints", "facelab-emotion"):
        versions = client.search_model_versions(f"name='{model}'")
        assert len(versions) == 2, f"{model}: registry lost a version ({len(versions)})"
        client.get_model_version_by_alias(model, "champion")
