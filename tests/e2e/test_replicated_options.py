"""quick-emotion-5's training options on two replicas, end to end: ``dvc repro train_emotion`` of the tiny profile
with sharpness-aware steps (``sam_rho``, in the last epoch) and the weight average (``ema``) under
``FACELAB_CPU_DEVICES=2`` (a ``MirroredStrategy`` over two logical CPU devices) trains both epochs and registers
its model. That the steps and the average are one device's: tests/model/test_replicas.py."""

from __future__ import annotations

import json
import math
import sys

import pandas as pd
import pytest

from facelab.sandbox import make_project_copy, mlflow_client, run

pytestmark = pytest.mark.e2e
OPTIONS = {"sam_rho": 0.05, "sam_epochs": 1, "ema": 0.9}  # quick-emotion-5's radius; SAM in the last of 2 epochs


def test_sam_and_the_weight_average_train_on_two_replicas(tmp_path):
    path, env = make_project_copy(tmp_path / "repo")
    profile = tmp_path / "options.yaml"
    profile.write_text(json.dumps({"train_emotion": OPTIONS}))  # JSON is YAML
    run([sys.executable, "-m", "facelab.cli", "params", "apply", str(profile)], path, env)
    result = run(["dvc", "repro", "train_emotion"], path, {**env, "FACELAB_CPU_DEVICES": "2"})

    # tiny profile: batch_size 16 per replica, lr 0.001 -> global batch 32, lr 0.002 (linear scaling)
    assert "[train_emotion] MirroredStrategy: 2 replicas, global batch 32, learning rate 0.002" in result.stdout
    assert "[train_emotion] epoch 2/2" in result.stdout
    history = pd.read_csv(path / "plots" / "train_emotion_history.csv")
    assert list(history["epoch"]) == [1, 2] and history[["loss", "val_loss"]].notna().all().all()
    metrics = json.loads((path / "metrics" / "train_emotion.json").read_text())
    assert math.isfinite(metrics["best_val_loss"]) and 0 <= metrics["served_val_accuracy"] <= 1
    client = mlflow_client(path)
    experiment = client.get_experiment_by_name("facelab").experiment_id
    (stage_run,) = [r for r in client.search_runs([experiment]) if r.info.run_name == "train_emotion"]
    assert stage_run.info.status == "FINISHED"
    assert stage_run.data.params["devices.replicas"] == "2"
    logged = {name: float(stage_run.data.params[f"train_emotion.{name}"]) for name in OPTIONS}
    assert logged == OPTIONS
    versions = client.search_model_versions("name='facelab-emotion'")
    assert [v.run_id for v in versions] == [stage_run.info.run_id]
