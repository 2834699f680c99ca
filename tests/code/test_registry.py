"""The champion alias only moves to a model that is no worse, and says why (real MLflow, SQLite store)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from facelab import tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.connect("facelab-test")
    client = MlflowClient()
    client.create_registered_model("kp")
    return client


def _new_version(client: MlflowClient) -> int:
    return int(client.create_model_version("kp", source="file:///nowhere", run_id=None).version)


def test_first_model_becomes_champion(store):
    v1 = _new_version(store)
    decision = tracking.promote_if_no_worse("kp", v1, "keypoints.rmse_px", 2.0, higher_is_better=False)
    assert decision["promoted"] and decision["reason"] == "no champion yet"
    assert str(store.get_model_version_by_alias("kp", "champion").version) == str(v1)


def test_worse_model_does_not_take_the_alias_and_the_reason_is_recorded(store):
    v1, v2 = _new_version(store), _new_version(store)
    tracking.promote_if_no_worse("kp", v1, "keypoints.rmse_px", 2.0, higher_is_better=False)
    decision = tracking.promote_if_no_worse("kp", v2, "keypoints.rmse_px", 2.5, higher_is_better=False)
    assert not decision["promoted"]
    assert str(store.get_model_version_by_alias("kp", "champion").version) == str(v1)
    tags = store.get_model_version("kp", str(v2)).tags
    assert tags["champion_decision"].startswith("kept out: keypoints.rmse_px 2.5 is worse than champion v1")
    assert tags["test.keypoints.rmse_px"] == "2.5"


def test_equal_or_better_model_takes_the_alias(store):
    v1, v2, v3 = _new_version(store), _new_version(store), _new_version(store)
    tracking.promote_if_no_worse("kp", v1, "emotion.f1_weighted", 0.8, higher_is_better=True)
    assert tracking.promote_if_no_worse("kp", v2, "emotion.f1_weighted", 0.8, higher_is_better=True)["promoted"]
    assert tracking.promote_if_no_worse("kp", v3, "emotion.f1_weighted", 0.9, higher_is_better=True)["promoted"]
    assert str(store.get_model_version_by_alias("kp", "champion").version) == str(v3)


def test_runs_are_tagged_and_killed_on_interrupt(store, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lark")
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("train_keypoints", {"train_keypoints": {"lr": 0.001}}, "facelab-test"):
            raise KeyboardInterrupt
    run = store.search_runs([store.get_experiment_by_name("facelab-test").experiment_id])[0]
    assert run.info.status == "KILLED"
    assert run.data.tags["dvc.exp_name"] == "brisk-lark"
    assert run.data.params["train_keypoints.lr"] == "0.001"
