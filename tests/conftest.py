"""The fixtures every test can ask for (no import needed): where the repository and the real data are, a free
port, a throwaway MLflow store, a throwaway copy of the project, and tiny networks. The plain helpers behind
them: facelab.sandbox (ports, project copies: the benchmarks use them too) and tests/support/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facelab import sandbox
from facelab.config import SHARED_DATA
from tests.support import networks

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def shared_data() -> Path:
    data = (REPO / SHARED_DATA).resolve()
    if not data.exists():
        pytest.skip(f"real data not found at {data}")
    return data


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 (nothing listens there until the test starts a server on it)."""
    return sandbox.free_port()


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """An empty SQLite MLflow store in tmp_path, made the test's store through MLFLOW_TRACKING_URI; the test
    runs in tmp_path (a SQLite store's artifacts go to ./mlruns). Returns its URI."""
    uri = f"sqlite:///{tmp_path / sandbox.STORE_FILE}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def project_copy(tmp_path) -> tuple[Path, dict]:
    """A git+DVC copy of the project in tmp_path/repo with the tiny profile, and the environment to run it in
    (sandbox.make_project_copy; call that for another profile, several copies or a wider scope)."""
    return sandbox.make_project_copy(tmp_path / "repo")


@pytest.fixture(scope="session")
def tiny_face_networks():
    """facelab's keypoint and emotion networks at width 16 (networks.TINY_EMOTION_CLASSES), untrained and
    seeded; one pair for the session: wrap them (tta.wrap) or analyse with them, do not train them."""
    return networks.tiny_face_networks()


@pytest.fixture(scope="session")
def tiny_keypoint_network(tiny_face_networks):
    return tiny_face_networks[0]


@pytest.fixture(scope="session")
def tiny_emotion_network(tiny_face_networks):
    return tiny_face_networks[1]
