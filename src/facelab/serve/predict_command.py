"""The ``facelab predict`` command: keypoints and emotion of every face in photo files, written beside each other.

The analysis is ``facelab.serve.photo_batches.iter_analysed`` (faces of all photos in shared batches; the
record format is described there), the analyser ``facelab.serve.loading.load_analyzer``'s (the champions
by default). This module adds what the command alone does: for each photo, write
``<out>/<stem>.annotated.jpg`` (``facelab.serve.drawing.annotate``: face boxes, keypoints, emotion and
probability) and ``<out>/<stem>.json`` (its record), a progress bar from ``PROGRESS_MIN_PHOTOS`` photos on,
and a line on stderr for a photo that cannot be read (an error record; the others are still analysed) or
has no face.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facelab.atomic import atomic_path, write_json
from facelab.errors import FacelabError
from facelab.runner import EXIT_ERROR
from facelab.serve import photos
from facelab.serve.drawing import annotate
from facelab.serve.photo_batches import BATCH_FACES, iter_analysed

if TYPE_CHECKING:
    from facelab.serve.analysis import FaceAnalysis

PROGRESS_MIN_PHOTOS = 4  # a progress bar on stderr from this many photos on
ANNOTATED_SUFFIX, JSON_SUFFIX = ".annotated.jpg", ".json"
JPEG_QUALITY = 92


def run(paths: Sequence[str | Path], analyzer: FaceAnalysis, out_dir: str | Path, as_json: bool = False) -> int:
    """``facelab predict``: analyse and write every photo, print all records as JSON (``as_json``) or one line
    per photo; the exit status (``EXIT_ERROR`` when a photo could not be read)."""
    records = analyse_photos(paths, analyzer, out_dir)
    if as_json:
        print(json.dumps(records, indent=2))
    else:
        for record, (annotated, _) in zip(records, output_paths(paths, out_dir)):
            if "error" not in record:
                faces = "".join(f", {f['emotion']} {f['probability']:.2f}" for f in record["faces"])
                print(f"{record['photo']}: {len(record['faces'])} face(s){faces} -> {annotated}")
    return EXIT_ERROR if any("error" in r for r in records) else 0


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
    paths: Sequence[str | Path], analyzer: FaceAnalysis, out_dir: str | Path, batch_faces: int = BATCH_FACES
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


def write_annotated(path: str | Path, gray: np.ndarray, record: dict) -> None:
    """``drawing.annotate``'s picture of the photo as a JPEG at ``path`` (written atomically)."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), annotate(gray, record), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise FacelabError(f"{path}: cannot write the annotated photo")
