"""The served face analyser: both champion models in one MLflow ``pyfunc`` model.

The ``combine`` stage logs it and registers it as ``params.yaml``'s ``tracking.analyzer_model`` (default
``facelab-face-analyzer``) with the aliases ``candidate`` and ``champion``: it is built from the
two champions, so it is the champion by construction. It holds copies of the two Keras model
versions that held ``champion`` and the emotion class list, and its code is the facelab package
itself (``code_paths``), so a server needs nothing but the environment::

    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db \\
        mlflow models serve -m models:/facelab-face-analyzer@champion --env-manager local --port 5001

Request: a DataFrame with a column ``image`` of base64-encoded image files (JPEG, PNG, ...), one
row per photo, and optionally ``name`` (echoed as ``photo``)::

    curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
        -d "{\\"dataframe_split\\": {\\"columns\\": [\\"image\\"], \\"data\\": [[\\"$(base64 -w0 photo.jpg)\\"]]}}"

Answer: ``{"predictions": [record, ...]}``, one record per row, exactly as ``facelab predict``
writes them (``facelab.serve.photo_batches``: box, keypoints in photo pixels, emotion, probabilities); a row
that is not a readable image gets ``{"photo", "error"}``.

MLflow pickles the ``FaceAnalyzerModel`` instance with a reference to its class by module path
(``facelab.serve.pyfunc.FaceAnalyzerModel``), resolved when loading in the package copy logged with the
model, or, in a process that has already imported facelab, in that facelab.

This module, ``facelab.tracking.store`` and ``facelab.tracking.registry`` are the only ones that import MLflow.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

import facelab
from facelab.errors import FacelabError
from facelab.serve.keras_runtime import FaceAnalyzer
from facelab.serve.photo_batches import analyse_encoded
from facelab.tracking import registry, store, uris

IMAGE_COLUMN, NAME_COLUMN = "image", "name"
ARTIFACT_NAME = "analyzer"
REQUIREMENTS = (
    "mlflow",
    "keras",
    registry.TENSORFLOW_MODULE,
    "numpy",
    "pandas",
    "opencv-python-headless",
    "pillow",
)  # TensorFlow: the build installed here (registry.pinned_requirements)


class FaceAnalyzerModel(mlflow.pyfunc.PythonModel):
    """pyfunc: a DataFrame of base64 image files in, one ``facelab predict`` record per row out."""

    def load_context(self, context) -> None:
        config = context.model_config or {}
        self.batch_faces = int(config.get("batch_faces", 64))
        self.analyzer = FaceAnalyzer(
            registry.load_keras(context.artifacts["keypoints_model"]),
            registry.load_keras(context.artifacts["emotion_model"]),
            list(config["classes"]),
        )

    # The pd.DataFrame hint tells MLflow to keep the explicit signature (no inference, no warning).
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[dict]:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if IMAGE_COLUMN not in frame.columns:
            raise FacelabError(
                f"the input needs a column {IMAGE_COLUMN!r} of base64-encoded image files "
                f"(got columns {list(frame.columns)})"
            )
        names = (
            [str(n) for n in frame[NAME_COLUMN]]
            if NAME_COLUMN in frame.columns
            else [f"image {i}" for i in range(len(frame))]
        )
        return analyse_encoded([_image_bytes(v) for v in frame[IMAGE_COLUMN]], self.analyzer, names, self.batch_faces)


def _image_bytes(value) -> bytes:
    """A cell of the ``image`` column as file bytes: base64 text (or raw bytes, from Python callers)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        return b""  # reported as an empty file
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"\x00not base64"  # reported as "not an image file"


def _example_image() -> str:
    import cv2

    ok, png = cv2.imencode(".png", np.full((32, 32), 128, np.uint8))
    return base64.b64encode(png.tobytes()).decode("ascii")


def _package_copy(folder: Path) -> str:
    """A copy of the facelab package's source (no caches) for ``code_paths``: what a model server imports."""
    target = folder / "facelab"
    shutil.copytree(
        Path(facelab.__file__).resolve().parent, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return str(target)


@dataclass(frozen=True)
class Champions:
    """The two model versions that held an alias when fetched, downloaded to local folders."""

    names: dict[str, str]  # task (keypoints, emotion) -> registered model name
    versions: dict[str, int]  # task -> version number
    folders: dict[str, str]  # task -> local MLflow model folder of that version
    classes: list[str]  # the emotion version's class list


def fetch_champions(keypoints_name: str, emotion_name: str, folder: Path, alias: str = uris.CHAMPION) -> Champions:
    """Resolve ``alias`` of both models once and download those versions under ``folder``."""
    versions = {}
    for task, name in (("keypoints", keypoints_name), ("emotion", emotion_name)):
        try:
            versions[task] = int(registry.get_version(name, alias).version)
        except Exception as exc:  # MLflow's not-found error: say which model has no such version
            raise FacelabError(f"{uris.alias_uri(name, alias)}: no such model version: {exc}") from None
    return fetch_versions({"keypoints": keypoints_name, "emotion": emotion_name}, versions, folder)


def fetch_versions(names: dict[str, str], versions: dict[str, int], folder: Path, source: str = "") -> Champions:
    """Download the given versions (task -> registered name, task -> version) under ``folder``.

    Everything built from the result (combine's pictures, the served analyser) uses these two
    versions even if another run moves an alias meanwhile, and each model is downloaded once.
    ``source`` names where the versions came from, for the error when one no longer exists.
    """
    found = {}
    for task, name in names.items():
        try:
            found[task] = registry.get_version(name, number=versions[task])
        except Exception:  # MLflow's not-found error
            where = f" (named in {source})" if source else ""
            raise FacelabError(
                f"{uris.version_uri(name, versions[task])}{where}: no such model version in "
                f"{store.tracking_uri()}: rerun evaluate (dvc repro -f evaluate)"
            ) from None
    classes = found["emotion"].tags.get("classes")
    if not classes:
        raise FacelabError(f"{uris.version_uri(names['emotion'], versions['emotion'])}: no 'classes' tag")
    folders = {}
    for task, name in names.items():
        uri = uris.version_uri(name, versions[task])
        folders[task] = store.download(uri, Path(folder) / task, "download model")
    return Champions(dict(names), {task: int(v) for task, v in versions.items()}, folders, classes.split(","))


def log_and_register_analyzer(champions: Champions, analyzer_name: str, alias: str = uris.CHAMPION) -> dict:
    """Log the analyser built from ``champions`` (``fetch_champions``) in the active run, register it.

    The new version gets ``candidate`` and ``alias`` (built from the champions, it is the champion)
    and tags naming the versions it holds.
    Returns name, version, run_id, model_uri, keypoints_version, emotion_version.
    """
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="facelab-analyzer-") as tmp:
        example = pd.DataFrame({IMAGE_COLUMN: [_example_image()]})
        info = store.retry(
            lambda: mlflow.pyfunc.log_model(
                name=ARTIFACT_NAME,
                python_model=FaceAnalyzerModel(),
                artifacts={f"{task}_model": folder for task, folder in champions.folders.items()},
                code_paths=[_package_copy(Path(tmp) / "code")],
                signature=ModelSignature(
                    inputs=Schema([ColSpec("string", IMAGE_COLUMN), ColSpec("string", NAME_COLUMN, required=False)])
                ),
                input_example=example,
                model_config={"classes": champions.classes, "batch_faces": 64},
                pip_requirements=registry.pinned_requirements(REQUIREMENTS),
                metadata={
                    f"{task}_model": f"{champions.names[task]}/{champions.versions[task]}" for task in champions.names
                },
            ),
            "log model",
        )
    registered = registry.register_version(
        info.model_uri,
        analyzer_name,
        {
            "keypoints_version": champions.versions["keypoints"],
            "emotion_version": champions.versions["emotion"],
            "classes": ",".join(champions.classes),
        },
    )
    number = int(registered.version)
    for name in dict.fromkeys((uris.CANDIDATE, alias)):  # from the champions: the champion
        store.retry(lambda: client.set_registered_model_alias(analyzer_name, name, str(number)), f"alias {name}")
    run = mlflow.active_run()
    return {
        "name": analyzer_name,
        "version": number,
        "run_id": run.info.run_id if run else None,
        "model_uri": info.model_uri,
        "keypoints_version": champions.versions["keypoints"],
        "emotion_version": champions.versions["emotion"],
    }
