"""The ``facelab predict`` command: keypoints and emotion of every face in photos, with the champion models.

For each photo: read it (``facelab.serve.photos``), find its faces, crop each like the training faces,
run both models on batches of faces from all photos together (``FaceAnalyzer.analyse``, one
call per ``batch_faces`` faces, not per face), map the keypoints back into photo pixels, and
write ``<out>/<stem>.annotated.jpg`` (face boxes, keypoints, emotion and probability) and
``<out>/<stem>.json``. A photo that cannot be read gets an error record and a line on stderr;
the others are still analysed.

The record of a photo (also what the served ``facelab-face-analyzer`` model answers)::

    {"photo": "group.jpg", "width": 1024, "height": 768,
     "faces": [{"box": [x, y, w, h],
                "keypoints": {"left_eye_center": [x, y], ...},   # photo pixels, the 15 Kaggle names
                "emotion": "happiness", "probability": 0.81,
                "probabilities": {"anger": 0.02, ...}}]}
    {"photo": "broken.jpg", "error": "broken.jpg: truncated JPEG image: ..."}
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facelab.atomic import atomic_path, write_json
from facelab.errors import FacelabError
from facelab.serve import photos
from facelab.tracking import uris

if TYPE_CHECKING:  # imports TensorFlow: only load_analyzer does, so that the ONNX Runtime path runs without it
    from facelab.serve.keras_runtime import FaceAnalyzer

BATCH_FACES = 64
KERAS_SUFFIX = ".keras"
PROGRESS_MIN_PHOTOS = 4  # a progress bar on stderr from this many photos on
ANNOTATED_SUFFIX, JSON_SUFFIX = ".annotated.jpg", ".json"
JPEG_QUALITY = 92

Source = tuple[str, Callable[[], np.ndarray]]  # a photo's name, and how to read it (may raise FacelabError)


# --- the analysis, shared by the command line and the served model ----------------------------


@dataclass
class _Pending:
    record: dict
    gray: np.ndarray | None
    waiting: int  # faces not analysed yet


def iter_analysed(
    sources: Iterable[Source], analyzer: FaceAnalyzer, batch_faces: int = BATCH_FACES
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


def analyse_images(sources: Iterable[Source], analyzer: FaceAnalyzer, batch_faces: int = BATCH_FACES) -> list[dict]:
    """The records of photos given as ``(name, reader)`` pairs (no files written)."""
    return [record for record, _ in iter_analysed(sources, analyzer, batch_faces)]


def analyse_encoded(
    images: Sequence[bytes], analyzer: FaceAnalyzer, names: Sequence[str] | None = None, batch_faces: int = BATCH_FACES
) -> list[dict]:
    """The records of image files given as bytes (what the served model receives)."""
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    return analyse_images(
        ((n, partial(photos.decode_photo, data, n)) for n, data in zip(names, images)), analyzer, batch_faces
    )


# --- the command line -------------------------------------------------------------------------


def output_paths(paths: Sequence[str | Path], out_dir: str | Path) -> list[tuple[Path, Path]]:
    """``(annotated jpg, json)`` per photo in ``out_dir``; photos with the same stem get ``-2``, ``-3``..."""
    out_dir, used, result = Path(out_dir), set(), []
    for path in paths:
        stem = base = Path(path).stem or "photo"
        count = 1
        while stem in used:
            count += 1
            stem = f"{base}-{count}"
        used.add(stem)
        result.append((out_dir / f"{stem}{ANNOTATED_SUFFIX}", out_dir / f"{stem}{JSON_SUFFIX}"))
    return result


def analyse_photos(
    paths: Sequence[str | Path], analyzer: FaceAnalyzer, out_dir: str | Path, batch_faces: int = BATCH_FACES
) -> list[dict]:
    """Analyse the photo files at ``paths``; write an annotated copy and a JSON record of each in ``out_dir``.

    Returns the records in the order of ``paths``. A photo that cannot be read gets
    ``{"photo", "error"}`` (and a line on stderr); a photo without faces gets ``"faces": []`` (and a note).
    """
    paths = [Path(p) for p in paths]
    outputs = output_paths(paths, out_dir)
    sources = ((str(p), partial(photos.read_photo, p)) for p in paths)
    bar = _progress(len(paths))
    records = []
    try:
        for (record, gray), (annotated, json_path) in zip(iter_analysed(sources, analyzer, batch_faces), outputs):
            if "error" in record:
                _say(bar, f"facelab: error: {record['error']}")
            else:
                if not record["faces"]:
                    _say(bar, f"{record['photo']}: no face found")
                try:
                    write_annotated(annotated, gray, record)
                    write_json(json_path, record)
                except OSError as exc:
                    raise FacelabError(
                        f"{exc.filename or json_path.parent}: cannot write the outputs: {exc.strerror or exc}"
                    ) from None
            records.append(record)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return records


def _progress(total: int):
    if total < PROGRESS_MIN_PHOTOS:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with dvc; without it, no bar
        return None
    return tqdm(total=total, unit="photo", desc="facelab predict", file=sys.stderr, dynamic_ncols=True)


def _say(bar, line: str) -> None:
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def annotate(gray: np.ndarray, record: dict) -> np.ndarray:
    """A BGR copy of the photo with each face's box, keypoints and ``emotion probability`` drawn."""
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    thick = max(1, int(round(max(gray.shape) / 600)))
    for face in record["faces"]:
        x, y, w, h = face["box"]
        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 200, 0), thick, cv2.LINE_AA)
        radius = max(2, int(round(w / 60)))
        for px, py in face["keypoints"].values():
            cv2.circle(image, (int(round(px)), int(round(py))), radius, (0, 0, 255), -1, cv2.LINE_AA)
        label = f"{face['emotion']} {face['probability']:.2f}"
        scale = max(0.4, w / 250)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = y - th - base - 2 * thick if y - th - base - 2 * thick >= 0 else y + h
        cv2.rectangle(image, (x, top), (x + tw + 2 * thick, top + th + base + 2 * thick), (0, 200, 0), -1)
        cv2.putText(
            image, label, (x + thick, top + th + thick), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA
        )
    return image


def write_annotated(path: str | Path, gray: np.ndarray, record: dict) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), annotate(gray, record), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise FacelabError(f"{path}: cannot write the annotated photo")


# --- the models -------------------------------------------------------------------------------


def load_analyzer(
    params: dict,
    keypoints_model: str | None = None,
    emotion_model: str | None = None,
    classes: Sequence[str] | None = None,
) -> FaceAnalyzer:
    """The two models: by default the registry's ``champion`` versions named in ``params``' ``tracking:``.

    ``keypoints_model`` / ``emotion_model`` replace either with an MLflow model URI or a local
    ``.keras`` file; a given emotion model's classes are ``classes``, else ``data.emotion.classes``.
    (``onnx_runtime.load_onnx_analyzer`` is the same on ONNX Runtime.)
    """
    from facelab.serve.keras_runtime import FaceAnalyzer
    from facelab.tracking import store

    names = params["tracking"]
    if not all(uris.is_local(uri, KERAS_SUFFIX) for uri in (keypoints_model, emotion_model)):
        store.connect(names["experiment"])
    keypoints = _load_model(keypoints_model or uris.alias_uri(names["keypoints_model"]))
    if emotion_model is None:
        uri = uris.alias_uri(names["emotion_model"])
        emotion = _load_model(uri)
        if classes is None:
            try:
                classes = store.version_tags(names["emotion_model"])["classes"].split(",")
            except KeyError:
                raise FacelabError(f"{uri}: the model version has no 'classes' tag: pass --classes") from None
    else:
        emotion = _load_model(emotion_model)
    classes = list(classes) if classes is not None else list(params["data"]["emotion"]["classes"])
    outputs = int(emotion.output_shape[-1])
    if outputs != len(classes):
        raise FacelabError(
            f"{emotion_model or uri}: the emotion model has {outputs} outputs but {len(classes)} "
            f"classes were given ({','.join(classes)})"
        )
    return FaceAnalyzer(keypoints, emotion, classes)


def _load_model(uri: str):
    from facelab.nn import inference
    from facelab.tracking import store

    if uris.is_local(uri, KERAS_SUFFIX):
        if not Path(uri).is_file():
            raise FacelabError(f"{uri}: no such model file")
        try:
            return inference.load_model(uri)
        except Exception as exc:  # Keras raises many types for a file that is not a model
            raise FacelabError(f"{uri}: cannot load the Keras model: {_first_line(exc)}") from None
    try:
        return store.load_keras(uri)
    except Exception as exc:  # MLflow's errors: no such model or alias, unreachable store
        raise FacelabError(f"{uri}: cannot load the model from {store.tracking_uri()}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
