"""The batch loop ``facelab predict``, ``facelab demo`` and the served pyfunc share: every face of photos, analysed.

For each photo: read it (``facelab.serve.photos``), find its faces, crop each like the training faces,
run both models on batches of faces from all photos together (``FaceAnalyzer.analyse``, one
call per ``batch_faces`` faces, not per face) and map the keypoints back into photo pixels. A photo
that cannot be read gets an error record; the others are still analysed. Nothing here writes a file.

The record of a photo (what ``facelab predict`` writes, the demo shows and the served
``facelab-face-analyzer`` model answers)::

    {"photo": "group.jpg", "width": 1024, "height": 768,
     "faces": [{"box": [x, y, w, h],
                "keypoints": {"left_eye_center": [x, y], ...},   # photo pixels, the 15 Kaggle names
                "emotion": "happiness", "probability": 0.81,
                "probabilities": {"anger": 0.02, ...}}]}
    {"photo": "broken.jpg", "error": "broken.jpg: truncated JPEG image: ..."}

The analyser is anything with ``analyse`` and ``keypoint_size`` (``facelab.serve.analysis.FaceAnalysis``:
Keras's ``FaceAnalyzer`` or ONNX Runtime's ``OnnxFaceAnalyzer``): nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from facelab.errors import FacelabError
from facelab.serve import photos

if TYPE_CHECKING:
    from facelab.serve.analysis import FaceAnalysis

BATCH_FACES = 64

Source = tuple[str, Callable[[], np.ndarray]]  # a photo's name, and how to read it (may raise FacelabError)


@dataclass
class _Pending:
    record: dict
    gray: np.ndarray | None
    waiting: int  # faces not analysed yet


def iter_analysed(
    sources: Iterable[Source], analyzer: FaceAnalysis, batch_faces: int = BATCH_FACES
) -> Iterator[tuple[dict, np.ndarray | None]]:
    """``(record, grayscale photo or None)`` for each source, in order, as soon as all its faces are analysed.

    Faces from consecutive photos share batches: the models run once per ``batch_faces`` faces,
    and only the photos whose faces wait for a batch are held in memory.
    """
    if batch_faces < 1:
        raise ValueError(f"batch_faces must be >= 1, got {batch_faces}")
    pending: deque[_Pending] = deque()
    crops: list[np.ndarray] = []
    owners: list[tuple[_Pending, dict, np.ndarray]] = []  # per queued crop: its photo, its face record, crop->photo

    def run_batch(count: int) -> None:
        batch, batch_owners = np.stack(crops[:count]), owners[:count]
        del crops[:count], owners[:count]
        for (photo, face, to_photo), result in zip(batch_owners, analyzer.analyse(batch)):
            face.update(_in_photo(result, to_photo))
            photo.waiting -= 1

    def finished() -> Iterator[tuple[dict, np.ndarray | None]]:
        while pending and pending[0].waiting == 0:
            done = pending.popleft()
            yield done.record, done.gray

    for name, load in sources:
        try:
            gray = load()
        except FacelabError as exc:
            pending.append(_Pending({"photo": name, "error": str(exc)}, None, 0))
            yield from finished()
            continue
        boxes = photos.detect_faces(gray)
        record = {"photo": name, "width": int(gray.shape[1]), "height": int(gray.shape[0]), "faces": []}
        photo = _Pending(record, gray, len(boxes))
        for box in boxes:
            crop, to_photo = photos.crop_face(gray, box, analyzer.keypoint_size)
            face = {"box": [int(v) for v in box]}
            record["faces"].append(face)
            crops.append(crop)
            owners.append((photo, face, to_photo))
        pending.append(photo)
        while len(crops) >= batch_faces:
            run_batch(batch_faces)
        yield from finished()
    while crops:
        run_batch(min(batch_faces, len(crops)))
    yield from finished()


def _in_photo(result: dict, to_photo: np.ndarray) -> dict:
    """``FaceAnalyzer.analyse``'s record of a crop with its keypoints moved into photo pixels."""
    names = list(result["keypoints"])
    points = photos.to_photo_points(np.array([result["keypoints"][n] for n in names]), to_photo)
    return {
        "keypoints": {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(names, points)},
        "emotion": result["emotion"],
        "probability": result["probability"],
        "probabilities": result["probabilities"],
    }


def analyse_images(sources: Iterable[Source], analyzer: FaceAnalysis, batch_faces: int = BATCH_FACES) -> list[dict]:
    """The records of photos given as ``(name, reader)`` pairs (no files written)."""
    return [record for record, _ in iter_analysed(sources, analyzer, batch_faces)]


def analyse_encoded(
    images: Sequence[bytes], analyzer: FaceAnalysis, names: Sequence[str] | None = None, batch_faces: int = BATCH_FACES
) -> list[dict]:
    """The records of image files given as bytes (what the served model receives)."""
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    return analyse_images(
        ((n, partial(photos.decode_photo, data, n)) for n, data in zip(names, images)), analyzer, batch_faces
    )
