"""``FaceAnalyzer``: the keypoint and emotion models run together on square grayscale faces.

The one object ``combine``, ``facelab predict`` and the served ``facelab-face-analyzer`` pyfunc run
faces through; each model goes through ``inference.predict`` exactly as ``evaluate`` scores it (the
test-time averaging is inside the saved models, ``facelab.tta``).
"""

from __future__ import annotations

import numpy as np

from facelab import inference, tracking
from facelab.formats import KEYPOINT_NAMES


class FaceAnalyzer:
    """Keypoints + emotion for square grayscale faces, from two Keras models."""

    def __init__(self, keypoint_model, emotion_model, classes: list[str]):
        self.keypoint_model, self.emotion_model, self.classes = keypoint_model, emotion_model, list(classes)
        self.keypoint_size = inference.input_size(keypoint_model)
        self.emotion_size = inference.input_size(emotion_model)

    @classmethod
    def from_champions(cls, champions) -> FaceAnalyzer:
        """From ``serving.fetch_champions``: the two downloaded versions and the class list."""
        return cls(
            tracking.load_keras(champions.folders["keypoints"]),
            tracking.load_keras(champions.folders["emotion"]),
            champions.classes,
        )

    def keypoints(self, faces: np.ndarray) -> np.ndarray:
        """(N, 30) keypoint coordinates in each face's own pixel frame."""
        faces = np.asarray(faces, np.uint8)
        points = inference.predict(self.keypoint_model, inference.resize_faces(faces, self.keypoint_size))
        return points * (faces.shape[1] / self.keypoint_size)

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """(N, classes) emotion probabilities."""
        faces = np.asarray(faces, np.uint8)
        return inference.predict(self.emotion_model, inference.resize_faces(faces, self.emotion_size))

    def analyse(self, faces: np.ndarray) -> list[dict]:
        """Per face: the 15 named keypoints in the face's own pixel frame, the emotion and all probabilities."""
        points, probs = self.keypoints(faces), self.probabilities(faces)
        records = []
        for face_points, face_probs in zip(points.reshape(len(points), -1, 2), probs):
            best = int(face_probs.argmax())
            records.append(
                {
                    "keypoints": {
                        name: [round(float(x), 2), round(float(y), 2)]
                        for name, (x, y) in zip(KEYPOINT_NAMES, face_points)
                    },
                    "emotion": self.classes[best],
                    "probability": round(float(face_probs[best]), 4),
                    "probabilities": {c: round(float(p), 4) for c, p in zip(self.classes, face_probs)},
                }
            )
        return records
