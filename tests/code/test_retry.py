"""Retries around MLflow: which errors pass by themselves, the one line when they do not, and no
half-registered version left by a run that did not finish (real MLflow; SQLite or a closed port)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from facelab.cli import guarded
from facelab.tracking import store


def _wrapped(cause: BaseException) -> MlflowException:
    """As MLflow's REST client raises it: its own exception, raised while handling requests' error."""
    try:
        raise cause
    except BaseException:
        try:
            raise MlflowException(f"API request to http://127.0.0.1:1/api failed with exception {cause}")
        except MlflowException as exc:
            return exc


@pytest.mark.parametrize(
    "exc",
    [
        MlflowException("(sqlite3.OperationalError) database is locked"),
        _wrapped(requests.exceptions.ConnectionError("Connection refused")),
        _wrapped(requests.exceptions.ReadTimeout("read timed out")),
        _wrapped(requests.exceptions.RetryError("too many 503 error responses")),
        _wrapped(ConnectionResetError(104, "Connection reset by peer")),
        RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "restarting"}),
        RestException({"error_code": "INTERNAL_ERROR", "message": "server closed the connection unexpectedly"}),
        MlflowException(
            "API request to endpoint /api/2.0/mlflow/runs/get failed with error code 502 != 200. "
            "Response body: 'Bad Gateway'"
        ),
    ],
    ids=["sqlite-locked", "refused", "timeout", "5xx-retries", "reset", "unavailable", "internal", "502"],
)
def test_transient_errors_are_recognised(exc):
    assert store._is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no alias champion"}),
        RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad metric"}),
        MlflowException(
            "API request to endpoint /api/2.0/mlflow/runs/get failed with error code 401 != 200. "
            "Response body: 'You are not authenticated.'"
        ),
        ValueError("not an MLflow error"),
    ],
    ids=["not-found", "invalid", "401", "other"],
)
def test_lasting_errors_are_not_retried(exc):
    assert not store._is_transient(exc)
    calls = []

    def fail():
        calls.append(1)
        raise exc

    with pytest.raises(type(exc)):
        store.retry(fail)
    assert len(calls) == 1


def test_retry_waits_out_a_short_outage(monkeypatch):
    monkeypatch.setattr(store, "RETRY_FIRST_DELAY_S", 0.01)
    answers = iter([_wrapped(requests.exceptions.ConnectionError("refused"))] * 3 + ["ok"])

    def flaky():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert store.retry(flaky) == "ok"


def test_an_unreachable_server_ends_with_one_line(monkeypatch, capsys, free_port):
    port = free_port  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("FACELAB_RETRY_BUDGET_S", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert guarded(lambda: store.connect("facelab-test")) == 1
    err = capsys.readouterr().err
    notice, error = err.strip().splitlines()  # when the wait starts, and the one error line when it ends
    assert re.fullmatch(
        rf"facelab: MLflow server http://127\.0\.0\.1:{port} unreachable \(create experiment: .*Connection refused.*"
        r"\), retrying for up to 2 s",
        notice,
    ), err
    assert re.match(
        rf"facelab: error: MLflow server http://127\.0\.0\.1:{port} unreachable after \d+ tries "
        r"in \d+ s \(create experiment\): .*Connection refused",
        error,
    ), err


def test_the_retry_lines_never_show_a_password(monkeypatch, capsys, free_port):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:pw-{free_port}-x@127.0.0.1:{free_port}")
    monkeypatch.setenv("FACELAB_RETRY_BUDGET_S", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert guarded(lambda: store.connect("facelab-test")) == 1
    err = capsys.readouterr().err
    assert f"pw-{free_port}-x" not in err and "http://***@127.0.0.1" in err and "retrying for up to 1 s" in err, err


@pytest.fixture
def client(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the workspace whose .facelab/ holds the open-run notes
    store.connect("facelab-test")
    client = MlflowClient()
    client.create_registered_model("kp")
    return client


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_run_abandoned_while_the_store_was_down_is_closed_by_the_next_stage(client, tmp_path):
    experiment = client.get_experiment_by_name("facelab-test").experiment_id
    abandoned = client.create_run(experiment).info.run_id
    half = client.create_model_version("kp", source="file:///nowhere", run_id=abandoned)
    whole = client.create_model_version("kp", source="file:///nowhere", run_id=abandoned)
    client.set_registered_model_alias("kp", "champion", whole.version)  # (never so for a training run)
    notes = tmp_path / store.OPEN_RUNS_DIR
    notes.mkdir(parents=True)
    note = {"pid": _dead_pid(), "store": store.tracking_uri()}
    (notes / f"{abandoned}.json").write_text(json.dumps(note))

    with store.stage_run("evaluate", {"evaluate": {}}, "facelab-test"):
        pass

    assert client.get_run(abandoned).info.status == "FAILED"
    assert [v.version for v in client.search_model_versions("name='kp'")] == [whole.version]
    assert half.version != whole.version
    assert list(notes.iterdir()) == []


def test_a_failed_stage_takes_its_versions_with_it(client):
    with pytest.raises(RuntimeError):
        with store.stage_run("train_keypoints", {}, "facelab-test") as run:
            version = client.create_model_version("kp", source="file:///nowhere", run_id=run.info.run_id)
            client.set_registered_model_alias("kp", "candidate", version.version)
            raise RuntimeError("training broke after registering")
    assert client.search_model_versions("name='kp'") == []
    [failed] = client.search_runs([client.get_experiment_by_name("facelab-test").experiment_id])
    assert failed.info.status == "FAILED"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_store_call_waits_for_the_call_to_end(signum, monkeypatch):
    """SIGTERM or Ctrl-C in the middle of a store write once left SQLite's transaction open: the write that
    ends the run KILLED then found the store locked by its own process. Under stage_run's handler the
    signal is raised when the call has ended, and at once outside a store call."""
    monkeypatch.setattr(store, "_pending_signal", None)
    previous = signal.signal(signum, store._raise_terminated)
    done = []

    def store_call():
        os.kill(os.getpid(), signum)  # delivered here, in the middle of the call
        done.append("the rest of the call")
        return 7

    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            store.retry(store_call, "a store call")
        assert done == ["the rest of the call"]
        assert isinstance(raised.value, store._Terminated) == (signum == signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):  # outside a store call: at once
            os.kill(os.getpid(), signum)
            time.sleep(5)
        assert store.retry(lambda: 8) == 8  # nothing left pending
    finally:
        signal.signal(signum, previous)
