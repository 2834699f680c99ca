"""End to end: `dvc repro` on the tiny synthetic profile, then MLflow and the registry checked through MLflow's API."""

from __future__ import annotations

import json
import math

import pytest

from tests.e2e.helpers import make_project_copy, mlflow_client, run

pytestmark = pytest.mark.e2e
STAGES = ("prepare", "augment", "train_keypoints", "train_emotion", "evaluate", "combine")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path, env = make_project_copy(tmp_path_factory.mktemp("e2e") / "repo")
    result = run(["dvc", "repro"], path, env)
    return path, env, result


def test_every_stage_ran_and_wrote_its_outputs(project):
    path, _, result = project
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    for output in ("data/prepared/keypoints_test.npz", "data/augmented/keypoints_train.npz", "models/keypoints.keras",
                   "models/emotion.keras", "reports/evaluate/confusion.png", "reports/combine/faces.png",
                   "reports/combine/predictions.json", "plots/train_keypoints_history.csv"):
        assert (path / output).exists(), output


def test_metrics_are_finite_and_named_as_documented(project):
    path, _, _ = project
    metrics = json.loads((path / "metrics/evaluate.json").read_text())
    for value in (metrics["keypoints"]["rmse_px"], metrics["emotion"]["f1_weighted"], metrics["emotion"]["accuracy"]):
        assert math.isfinite(value)
    assert 0 <= metrics["emotion"]["f1_weighted"] <= 1
    predictions = json.loads((path / "reports/combine/predictions.json").read_text())
    assert len(predictions["faces"]) == 4
    assert len(predictions["faces"][0]["keypoints"]) == 15


def test_mlflow_has_every_stage_run_and_both_champions(project):
    path, _, _ = project
    client = mlflow_client(path)
    experiment = client.get_experiment_by_name("facelab")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.info.run_name: r for r in runs}
    assert set(STAGES) <= set(by_stage)
    assert all(r.info.status == "FINISHED" for r in runs)
    train = by_stage["train_keypoints"]
    assert train.data.params["train_keypoints.lr"] == "0.001"
    assert "git_commit" in train.data.tags
    assert len(client.get_metric_history(train.info.run_id, "loss")) == 2  # one per epoch
    assert "keypoints.rmse_px" in by_stage["evaluate"].data.metrics
    for name in ("facelab-keypoints", "facelab-emotion"):
        champion = client.get_model_version_by_alias(name, "champion")
        candidate = client.get_model_version_by_alias(name, "candidate")
        assert str(champion.version) == str(candidate.version) == "1"
        assert champion.tags["champion_decision"].startswith("promoted")
    assert path.joinpath("mlartifacts").is_dir()  # artifacts beside the store, by absolute path


def test_second_repro_is_a_no_op(project):
    path, env, _ = project
    result = run(["dvc", "repro"], path, env)
    assert "Running stage" not in result.stdout
