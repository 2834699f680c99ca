"""End to end: the combined face analyser, registered from two champion models, served by the real
`mlflow models serve`, answers what `facelab predict` answers for the same photo.

Request (what a client sends; ``name`` is optional and is echoed as ``photo``)::

    POST /invocations  Content-Type: application/json
    {"dataframe_split": {"columns": ["image"], "data": [["<base64 of the JPEG/PNG file>"]]}}
    or {"dataframe_records": [{"image": "<base64>", "name": "group.jpg"}]}

Answer: ``{"predictions": [{"photo", "width", "height", "faces": [{"box", "keypoints", "emotion",
"probability", "probabilities"}]}]}``, one record per row.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.support.networks import TINY_EMOTION_CLASSES as CLASSES
from tests.support.photos import two_faces_photo

pytestmark = pytest.mark.e2e

KEYPOINTS, EMOTION, ANALYZER = "facelab-keypoints", "facelab-emotion", "facelab-face-analyzer"
PING_TIMEOUT_S = 300  # a loaded 2-core machine needs minutes to start TensorFlow in the server


@pytest.fixture
def registry(mlflow_store, tmp_path, tiny_keypoint_network, tiny_emotion_network):
    """A SQLite MLflow store in tmp_path with tiny champion models and the analyser built from them."""
    from facelab.nn import tta
    from facelab.serve import pyfunc
    from facelab.tracking import champions, store
    from facelab.tracking.registry import log_and_register_keras

    with store.stage_run("train", {}, "facelab-serve-test"):
        # Wrapped in their test-time averaging, as the training stages save them.
        keypoints = log_and_register_keras(
            tta.wrap(tiny_keypoint_network, "keypoints", flip=True, shift_px=0),
            KEYPOINTS,
            np.zeros((1, 96, 96, 1), np.float32),
        )
        emotion = log_and_register_keras(
            tta.wrap(tiny_emotion_network, "emotion", flip=True, shift_px=0),
            EMOTION,
            np.zeros((1, 48, 48, 1), np.float32),
            tags={"classes": ",".join(CLASSES)},
        )
        champions.promote(
            KEYPOINTS,
            keypoints["version"],
            "keypoints.rmse_px",
            3.0,
            False,
            champions.task_tags("kp-test", "15 keypoints", "96x96"),
        )
        champions.promote(
            EMOTION,
            emotion["version"],
            "emotion.f1_weighted",
            0.5,
            True,
            champions.task_tags("em-test", ",".join(CLASSES), "48x48"),
        )
    with store.stage_run("combine", {}, "facelab-serve-test"):
        fetched = pyfunc.fetch_champions(KEYPOINTS, EMOTION, tmp_path / "champions")
        info = pyfunc.log_and_register_analyzer(fetched, ANALYZER)
    assert (info["version"], info["keypoints_version"], info["emotion_version"]) == (1, 1, 1)
    from mlflow import MlflowClient

    aliases = MlflowClient().get_registered_model(ANALYZER).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"candidate": "1", "champion": "1"}
    return mlflow_store


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def _wait_for_ping(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + PING_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the model server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"no answer on {url} within {PING_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server and whatever it started (its own process group): TERM, then KILL after 30 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def test_served_analyser_answers_like_facelab_predict(registry, tmp_path, free_port):
    from facelab.serve import predict_command, pyfunc
    from facelab.serve.keras_runtime import FaceAnalyzer

    photo = two_faces_photo(tmp_path / "two-faces.jpg")
    port = free_port
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=registry,
        TF_CPP_MIN_LOG_LEVEL="2",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/{ANALYZER}@champion",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_ping(f"http://127.0.0.1:{port}/ping", server, log)
        image = base64.b64encode(photo.read_bytes()).decode("ascii")
        not_an_image = base64.b64encode(b"just some text").decode("ascii")
        answer = _post(
            f"http://127.0.0.1:{port}/invocations",
            {"dataframe_split": {"columns": ["image"], "data": [[image], [not_an_image]]}},
        )
        named = _post(
            f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [{"image": image, "name": "two-faces.jpg"}]}
        )
    finally:
        _stop(server)

    served, bad = answer["predictions"]
    assert bad == {"photo": "image 1", "error": "image 1: not an image file (no known image format)"}
    assert named["predictions"][0]["photo"] == "two-faces.jpg"
    assert named["predictions"][0]["faces"] == served["faces"]

    analyzer = FaceAnalyzer.from_champions(pyfunc.fetch_champions(KEYPOINTS, EMOTION, tmp_path / "local"))
    [local] = predict_command.analyse_photos([photo], analyzer, tmp_path / "out")
    assert (served["width"], served["height"]) == (local["width"], local["height"]) == (720, 480)
    assert len(served["faces"]) == len(local["faces"]) == 2
    for remote, here in zip(served["faces"], local["faces"]):
        assert remote["box"] == here["box"]
        assert remote["emotion"] == here["emotion"]
        assert list(remote["probabilities"]) == CLASSES
        assert np.allclose(list(remote["probabilities"].values()), list(here["probabilities"].values()), atol=1e-4)
        assert list(remote["keypoints"]) == list(here["keypoints"])
        assert np.allclose(list(remote["keypoints"].values()), list(here["keypoints"].values()), atol=0.02)
