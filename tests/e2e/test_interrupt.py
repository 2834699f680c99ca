"""SIGTERM during training: the MLflow run is KILLED, no model file is left, and a rerun resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from facelab.sandbox import mlflow_client, run

pytestmark = pytest.mark.e2e
EPOCHS = 30


def test_sigterm_kills_the_run_cleanly_and_the_rerun_resumes(project_copy):
    path, env = project_copy
    (path / "long.yaml").write_text(f"train_keypoints:\n  epochs: {EPOCHS}\n")
    run([sys.executable, "-m", "facelab.cli", "params", "apply", "long.yaml"], path, env)
    run(["dvc", "repro", "augment"], path, env)  # prepare + augment only
    proc = subprocess.Popen(
        [sys.executable, "stages/train_keypoints.py"],
        cwd=path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            lines.append(line)
            if f"epoch 2/{EPOCHS}" in line:
                proc.send_signal(signal.SIGTERM)
                break
            assert time.monotonic() < deadline, "training never reached epoch 2"
        lines.extend(proc.stdout)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert code == 130, output
    assert "facelab: interrupted" in output
    assert not (path / "models/keypoints.keras").exists()
    assert not list((path / "models").glob(".keypoints.keras*")) if (path / "models").exists() else True

    client = mlflow_client(path)
    experiment = client.get_experiment_by_name("facelab")
    killed = client.search_runs([experiment.experiment_id], "attributes.run_name = 'train_keypoints'")
    assert [r.info.status for r in killed] == ["KILLED"]

    resumed = run([sys.executable, "stages/train_keypoints.py"], path, env).stdout
    epochs_run = [line for line in resumed.splitlines() if "[train_keypoints] epoch" in line]
    first = int(epochs_run[0].split("epoch ")[1].split("/")[0])
    assert 3 <= first <= EPOCHS, resumed  # the epochs finished before the signal were kept
    assert (path / "models/keypoints.keras").exists()
    history = (path / "plots/train_keypoints_history.csv").read_text().splitlines()
    assert len(history) == 1 + EPOCHS  # header + every epoch, across the interruption
