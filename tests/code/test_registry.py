"""The champion rules, against a real MLflow SQLite store: like for like by the number, a changed
task by its documented rule, queued experiments kept from changing the task, and racing promotions."""

from __future__ import annotations

import threading

import pytest
from mlflow import MlflowClient

from facelab.tracking import champions, store

FIVE = champions.task_tags("testset-5", "anger,disgust,sadness,happiness,surprise", "48x48")
SEVEN = champions.task_tags("testset-7", "anger,disgust,fear,happiness,sadness,surprise,neutral", "48x48")
F1 = "emotion.f1_weighted"


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One store for the module (creating a SQLite store takes seconds); each test has its own model."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        store.connect("facelab-test")
    return uri


@pytest.fixture
def name(request) -> str:
    return request.node.name


@pytest.fixture
def client(store_uri, name, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    store.connect("facelab-test")
    client = MlflowClient()
    client.create_registered_model(name)
    return client


def _new_version(client: MlflowClient, name: str) -> int:
    return int(client.create_model_version(name, source="file:///nowhere", run_id=None).version)


def _champion(client: MlflowClient, name: str) -> int:
    return int(client.get_model_version_by_alias(name, "champion").version)


def test_first_model_becomes_champion(client, name):
    v1 = _new_version(client, name)
    decision = champions.promote(name, v1, "keypoints.rmse_px", 2.0, False, FIVE)
    assert decision["promoted"] and decision["rule"] == "first champion"
    assert _champion(client, name) == v1
    tags = client.get_model_version(name, str(v1)).tags
    assert tags["facelab.fingerprint"] == FIVE["facelab.fingerprint"]
    assert tags["facelab.test_set"] == "testset-5" and tags["facelab.input_size"] == "48x48"


def test_worse_model_on_the_same_test_set_stays_out_and_says_why(client, name):
    v1, v2 = _new_version(client, name), _new_version(client, name)
    champions.promote(name, v1, "keypoints.rmse_px", 2.0, False, FIVE)
    decision = champions.promote(name, v2, "keypoints.rmse_px", 2.5, False, FIVE)
    assert not decision["promoted"] and decision["rule"] == "same task"
    assert _champion(client, name) == v1
    tags = client.get_model_version(name, str(v2)).tags
    assert tags["champion_decision"] == (
        "kept out (same task): keypoints.rmse_px 2.5 is worse than champion v1's 2 on the same task"
    )
    assert tags["test.keypoints.rmse_px"] == "2.5"


def test_equal_or_better_model_on_the_same_test_set_takes_the_alias(client, name):
    v1, v2, v3 = _new_version(client, name), _new_version(client, name), _new_version(client, name)
    champions.promote(name, v1, F1, 0.8, True, FIVE)
    assert champions.promote(name, v2, F1, 0.8, True, FIVE)["promoted"]  # a tie goes to the newer
    assert champions.promote(name, v3, F1, 0.9, True, FIVE)["promoted"]
    assert _champion(client, name) == v3


def test_a_model_on_another_test_set_is_not_compared_by_number(client, name):
    """The README's case: a 5-class model scoring 0.721 on synthetic faces must not keep out the
    7-class model scoring 0.626 on FER that the user just trained in the workspace."""
    five, seven = _new_version(client, name), _new_version(client, name)
    champions.promote(name, five, F1, 0.721, True, FIVE)
    decision = champions.promote(name, seven, F1, 0.626, True, SEVEN)
    assert decision["promoted"] and decision["rule"] == "task changed"
    assert "test set, classes/keypoints changed" in decision["reason"]
    assert _champion(client, name) == seven
    assert client.get_model_version(name, str(seven)).tags["champion_decision"].startswith("promoted (task changed)")
    # From now on the 7-class task is compared like for like: a worse 7-class model stays out.
    worse = _new_version(client, name)
    assert not champions.promote(name, worse, F1, 0.60, True, SEVEN)["promoted"]
    assert _champion(client, name) == seven


def test_a_queued_experiment_cannot_switch_the_task_but_may_promote_within_it(client, name):
    five, seven, better_five = _new_version(client, name), _new_version(client, name), _new_version(client, name)
    champions.promote(name, five, F1, 0.70, True, FIVE)
    decision = champions.promote(name, seven, F1, 0.95, True, SEVEN, queued=True)
    assert not decision["promoted"] and decision["rule"] == "queued experiment"
    assert "dvc exp apply" in decision["reason"]
    assert _champion(client, name) == five
    assert champions.promote(name, better_five, F1, 0.75, True, FIVE, queued=True)["promoted"]
    assert _champion(client, name) == better_five


def test_choose_champion_is_a_pure_function_of_the_tags():
    fp = FIVE["facelab.fingerprint"]
    versions = {
        1: {"facelab.fingerprint": fp, f"test.{F1}": "0.8"},
        2: {"facelab.fingerprint": fp, f"test.{F1}": "0.9"},
        3: {"facelab.fingerprint": fp, f"test.{F1}": "0.9"},  # tie with v2: the newer wins
        4: {"facelab.fingerprint": "other", f"test.{F1}": "0.99"},  # another task: not a candidate
        5: {"facelab.fingerprint": fp, f"test.{F1}": "nan"},
    }  # no usable figure
    assert champions.choose_champion(versions, fp, F1, higher_is_better=True) == 3
    assert champions.choose_champion(versions, fp, F1, higher_is_better=False) == 1
    assert champions.choose_champion(versions, "nothing", F1, True) is None


def test_two_racing_promotions_end_with_the_better_one(client, name):
    """Two threads promote at the same moment, each against the same old champion: whatever the
    interleaving, the better of the two ends as champion and the worse never stays."""
    old = _new_version(client, name)
    champions.promote(name, old, F1, 0.5, True, FIVE)
    for round_ in range(4):
        better, worse = _new_version(client, name), _new_version(client, name)
        value = 0.6 + round_ / 10
        barrier = threading.Barrier(2)
        errors = []

        def promote(version, figure, barrier=barrier, errors=errors):
            try:
                barrier.wait()
                champions.promote(name, version, F1, figure, True, FIVE)
            except Exception as exc:  # reported below, in the test's thread
                errors.append(exc)

        # The worse one starts first in even rounds, second in odd ones.
        order = [(worse, value - 0.05), (better, value)][:: 1 if round_ % 2 == 0 else -1]
        threads = [threading.Thread(target=promote, args=args) for args in order]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert _champion(client, name) == better, (
            f"round {round_}: v{_champion(client, name)} is champion, not v{better}"
        )
