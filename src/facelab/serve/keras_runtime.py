"""``FaceAnalyzer``: the keypoint and emotion models run together on square grayscale faces.

The one object ``combine``, ``facelab predict`` and the served ``facelab-face-analyzer`` pyfunc run
faces through; each model goes through ``inference.predict`` exactly as ``evaluate`` scores it (the
test-time averaging is inside the saved models, ``facelab.nn.tta``).
"""

from __future__ import annotations

import numpy as np

from facelab.nn import inference
from facelab.serve.analysis import FaceAnalysis
from facelab.tracking import registry


class FaceAnalyzer(FaceAnalysis):
    """Keypoints + emotion for square grayscale faces, from two Keras models (``analysis.FaceAnalysis``)."""

    def __init__(self, keypoint_model, emotion_model, classes: list[str]):
        self.keypoint_model, self.emotion_model, self.classes = keypoint_model, emotion_model, list(classes)
        self.keypoint_size = inference.input_size(keypoint_model)
        self.emotion_size = inference.input_size(emotion_model)

    @classmethod
    def from_champions(cls, champions) -> FaceAnalyzer:
        """From ``pyfunc.fetch_champions``: the two downloaded versions and the class list."""
        return cls(
            registry.load_keras(champions.folders["keypoints"]),
            registry.load_keras(champions.folders["emotion"]),
            champions.classes,
        )

    def run_model(self, model, faces: np.ndarray) -> np.ndarray:
        return inference.predict(model, faces)
