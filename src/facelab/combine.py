"""The ``combine`` stage: both champion models from the MLflow registry, run together on test faces.

Resolves ``models:/<keypoints>@champion`` and ``models:/<emotion>@champion`` once and downloads
those two versions (the emotion model's class list comes from its version's ``classes`` tag),
predicts keypoints and emotion for the first test faces, writes ``reports/combine/faces.png``
(keypoints drawn, emotion and probability written on each face) and
``reports/combine/predictions.json``, and registers the served analyser built from the same two
versions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from facelab import inference, tracking, viz
from facelab.atomic import write_json
from facelab.config import PREPARED_DIR, REPORTS_DIR
from facelab.formats import KEYPOINT_NAMES
from facelab.prepare import load_split


class FaceAnalyzer:
    """Keypoints + emotion for square grayscale faces, from two Keras models."""

    def __init__(self, keypoint_model, emotion_model, classes: list[str]):
        self.keypoint_model, self.emotion_model, self.classes = keypoint_model, emotion_model, list(classes)
        self.keypoint_size = inference.input_size(keypoint_model)
        self.emotion_size = inference.input_size(emotion_model)

    @classmethod
    def from_champions(cls, champions) -> "FaceAnalyzer":
        """From ``analyzer_model.fetch_champions``: the two downloaded versions and the class list."""
        return cls(tracking.load_keras(champions.folders["keypoints"]),
                   tracking.load_keras(champions.folders["emotion"]), champions.classes)

    def analyse(self, faces: np.ndarray) -> list[dict]:
        """Per face: the 15 named keypoints in the face's own pixel frame, the emotion and all probabilities."""
        faces = np.asarray(faces, np.uint8)
        size = faces.shape[1]
        points = inference.predict_keypoints(self.keypoint_model, inference.resize_faces(faces, self.keypoint_size))
        points = points * (size / self.keypoint_size)
        probs = inference.predict_emotion(self.emotion_model, inference.resize_faces(faces, self.emotion_size))
        records = []
        for face_points, face_probs in zip(points.reshape(len(faces), -1, 2), probs):
            best = int(face_probs.argmax())
            records.append({
                "keypoints": {name: [round(float(x), 2), round(float(y), 2)]
                              for name, (x, y) in zip(KEYPOINT_NAMES, face_points)},
                "emotion": self.classes[best],
                "probability": round(float(face_probs[best]), 4),
                "probabilities": {c: round(float(p), 4) for c, p in zip(self.classes, face_probs)},
            })
        return records


def run(params: dict) -> list[dict]:
    from facelab.analyzer_model import fetch_champions, log_and_register_analyzer

    cfg, names = params["combine"], params["tracking"]
    reports = REPORTS_DIR / "combine"
    with tracking.stage_run("combine", {"combine": cfg}, names["experiment"]), \
            tempfile.TemporaryDirectory(prefix="facelab-champions-") as tmp:
        champions = fetch_champions(names["keypoints_model"], names["emotion_model"], Path(tmp))
        analyzer = FaceAnalyzer.from_champions(champions)
        faces = load_split(PREPARED_DIR / "keypoints_test.npz")["images"][:cfg["faces"]]
        records = analyzer.analyse(faces)
        for index, record in enumerate(records):
            record["face"] = index
        points = np.array([[c for name in KEYPOINT_NAMES for c in r["keypoints"][name]] for r in records])
        viz.face_grid(reports / "faces.png", faces, predicted=points, columns=cfg["columns"],
                      titles=[f"{r['emotion']} {r['probability']:.2f}" for r in records],
                      suptitle="champion models: predicted keypoints and emotion")
        write_json(reports / "predictions.json", {"champion_versions": champions.versions, "faces": records})
        tracking.log_params({"champion_version": champions.versions})
        tracking.log_artifacts(reports / "faces.png", reports / "predictions.json", folder="combine")
        log_and_register_analyzer(champions, names["analyzer_model"])  # the same two versions, one served model
    return records
