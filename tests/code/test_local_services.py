"""The team launcher's own promises, without PostgreSQL or MLflow: ``restart-s3`` keeps every object of the
in-memory S3 server (moto, the team-test extra; skipped without it), and a folder where nothing was started
gets one line and exit 1, not a traceback."""

from __future__ import annotations

import os

import pytest

from facelab.tracking import local_services

OBJECTS = {
    "dvc/files/md5/ab/cdef0123": os.urandom(30_000),
    "mlflow/1/0a1b/artifacts/evaluate/a name with spaces.json": b'{"rmse": 1.5}',
    "top-level": b"",
}


@pytest.mark.parametrize("action", ["stop", "restart-mlflow", "restart-s3"])
def test_a_folder_where_nothing_was_started_gets_one_line(action, tmp_path, capsys):
    missing = tmp_path / "never-started"
    assert local_services.main([action, str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"team-services: error: {missing}: no such folder (nothing was started there)\n", err
    assert not missing.exists()
    if action != "stop":  # the folder exists, with no server started from it
        assert local_services.main([action, str(tmp_path)]) == 1
        service = action.removeprefix("restart-")
        assert (
            capsys.readouterr().err
            == f"team-services: error: no {service} server runs from {tmp_path} (start it first)\n"
        )


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """The S3 server alone, from ``tmp_path``; its state, stopped afterwards."""
    pytest.importorskip("moto.server", reason="the team-test extra (moto) is not installed")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    state: dict = {}
    try:
        local_services.start_s3(state, tmp_path)
        yield state
    finally:
        local_services.stop_s3(local_services.load_state(tmp_path), tmp_path, keep_objects=False)


def _put_all(state: dict) -> None:
    client = local_services.s3_client(state)
    for key, body in OBJECTS.items():
        client.put_object(Bucket=local_services.BUCKET, Key=key, Body=body)


def _read_all(state: dict) -> dict[str, bytes | None]:
    client = local_services.s3_client(state)
    found = {}
    for key in OBJECTS:
        try:
            found[key] = client.get_object(Bucket=local_services.BUCKET, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            found[key] = None
    return found


def test_restart_s3_keeps_every_object(s3, tmp_path):
    _put_all(s3)
    port = s3["s3_port"]
    local_services.restart(tmp_path, "s3")
    after = local_services.load_state(tmp_path)
    assert after["s3_port"] == port and after["s3_pid"] != s3["s3_pid"]
    assert _read_all(after) == OBJECTS
    assert not (tmp_path / local_services.S3_OBJECTS_DIR).exists()  # put back, then removed


def test_without_keeping_them_a_restart_loses_every_object(s3, tmp_path):
    """Why restart-s3 keeps them: moto holds objects in memory only."""
    _put_all(s3)
    local_services.stop_s3(s3, tmp_path, keep_objects=False)
    local_services.start_s3(s3, tmp_path)
    assert _read_all(s3) == dict.fromkeys(OBJECTS)
