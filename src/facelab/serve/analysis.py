"""What the two face analysers share, without TensorFlow: Keras's ``keras_runtime.FaceAnalyzer`` and ONNX Runtime's
``onnx_runtime.OnnxFaceAnalyzer`` differ only in how they run a model on a batch of faces.

``FaceAnalysis`` resizes square grayscale faces to each model's input, scales the keypoints back to each
face's own pixel frame and builds the per-face records ``analyse`` returns (``combine``, ``facelab predict``,
``facelab demo`` and the served pyfunc read them).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from facelab.formats import KEYPOINT_NAMES


def resize_faces(images: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 faces resized to ``size`` x ``size`` (area interpolation when shrinking)."""
    if images.shape[1] == size:
        return images
    interpolation = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(face, (size, size), interpolation=interpolation) for face in images])


class FaceAnalysis:
    """Keypoints + emotion for square grayscale faces from two models that ``run_model`` runs."""

    keypoint_model: Any
    emotion_model: Any
    classes: list[str]
    keypoint_size: int  # the models' square input sides
    emotion_size: int

    def run_model(self, model, faces: np.ndarray) -> np.ndarray:
        """``model``'s outputs for (N, size, size) uint8 faces of its input size."""
        raise NotImplementedError

    def keypoints(self, faces: np.ndarray) -> np.ndarray:
        """(N, 30) keypoint coordinates in each face's own pixel frame."""
        faces = np.asarray(faces, np.uint8)
        points = self.run_model(self.keypoint_model, resize_faces(faces, self.keypoint_size))
        return points * (faces.shape[1] / self.keypoint_size)

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """(N, classes) emotion probabilities."""
        faces = np.asarray(faces, np.uint8)
        return self.run_model(self.emotion_model, resize_faces(faces, self.emotion_size))

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
