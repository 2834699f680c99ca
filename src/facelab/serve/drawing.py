"""Drawing a photo's record on it: each face's box, keypoints and ``emotion probability``.

``facelab predict`` writes this picture as ``<stem>.annotated.jpg``; ``facelab demo`` shows it.
The record is ``facelab.serve.photo_batches``' (boxes and keypoints in photo pixels).
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_COLOUR, POINT_COLOUR, TEXT_COLOUR = (0, 200, 0), (0, 0, 255), (0, 0, 0)  # BGR


def annotate(gray: np.ndarray, record: dict) -> np.ndarray:
    """A BGR copy of the photo with each face's box, keypoints and ``emotion probability`` drawn."""
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    thick = max(1, int(round(max(gray.shape) / 600)))
    for face in record["faces"]:
        x, y, w, h = face["box"]
        cv2.rectangle(image, (x, y), (x + w, y + h), BOX_COLOUR, thick, cv2.LINE_AA)
        radius = max(2, int(round(w / 60)))
        for px, py in face["keypoints"].values():
            cv2.circle(image, (int(round(px)), int(round(py))), radius, POINT_COLOUR, -1, cv2.LINE_AA)
        label = f"{face['emotion']} {face['probability']:.2f}"
        scale = max(0.4, w / 250)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = y - th - base - 2 * thick if y - th - base - 2 * thick >= 0 else y + h
        cv2.rectangle(image, (x, top), (x + tw + 2 * thick, top + th + base + 2 * thick), BOX_COLOUR, -1)
        cv2.putText(
            image,
            label,
            (x + thick, top + th + thick),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            TEXT_COLOUR,
            thick,
            cv2.LINE_AA,
        )
    return image
