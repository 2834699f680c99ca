"""Read faces from the user's files into uint8 arrays: Kaggle keypoint CSVs, FER2013 CSVs, image folders.

Layouts (see :mod:`facelab.formats`):

* keypoints: Kaggle ``training.csv`` -- 30 coordinate columns and ``Image`` (9216 space-separated
  0-255 values). Any file name, plain or gzip (told by its magic bytes, not its suffix); columns in
  any order; extra columns ignored; empty coordinate cells become NaN.
* emotion CSV: ``fer2013.csv`` (``emotion,pixels,Usage``), ``icml_face_data.csv`` (the same with
  spaces before the column names) or a file without ``Usage``.
* emotion image folders: ``<root>/<class>/*.png|jpg|jpeg`` or ``<root>/<split>/<class>/...`` with
  split folders ``train``/``val``/``test``; class folder names go through ``EMOTION_ALIASES``.

Every bad input raises :class:`~facelab.errors.FacelabError` with one line that names the file, the
1-based data row where there is one (row 1 is the first line after the header; blank lines are
skipped but still counted) and what is wrong. UTF-8 BOMs and CRLF line endings are accepted.

The reading itself (threads, gzip, the vectorised pixel parse) is :mod:`facelab.data.csv_engine`
and :mod:`facelab.data.pixel_parser`; this module checks and shapes what they return.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facelab.data.csv_engine import read_table
from facelab.data.pixel_parser import shown_value
from facelab.errors import located
from facelab.formats import (
    EMOTION_ALIASES,
    EMOTION_IMAGE_SIZE,
    FER_LABELS,
    FER_USAGE_TEST,
    FER_USAGE_TRAIN,
    FER_USAGE_VAL,
    KEYPOINT_COLUMNS,
    KEYPOINT_IMAGE_COLUMN,
    KEYPOINT_IMAGE_SIZE,
)

# --- constants ----------------------------------------------------------------------------------

FER_LABEL_COLUMN = "emotion"
FER_PIXEL_COLUMN = "pixels"
FER_USAGE_COLUMN = "Usage"
FER_USAGES: tuple[str, ...] = (FER_USAGE_TRAIN, FER_USAGE_VAL, FER_USAGE_TEST)

# A keypoint may lie this many pixels outside the 96x96 image (annotation noise at the border):
# coordinates must be inside [-KEYPOINT_MARGIN, 96 + KEYPOINT_MARGIN] = [-1, 97].
KEYPOINT_MARGIN = 1.0

# Image folders: the suffixes read (case-insensitive), and split folder name -> Usage value.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS: dict[str, str] = {
    "train": FER_USAGE_TRAIN,
    "training": FER_USAGE_TRAIN,
    "val": FER_USAGE_VAL,
    "valid": FER_USAGE_VAL,
    "validation": FER_USAGE_VAL,
    "test": FER_USAGE_TEST,
    "testing": FER_USAGE_TEST,
}
SPLIT_ORDER: tuple[str, ...] = FER_USAGES


# --- public API ---------------------------------------------------------------------------------


@dataclass
class KeypointData:
    images: np.ndarray  # uint8 (N, 96, 96)
    keypoints: np.ndarray  # float32 (N, 30), Kaggle column order, NaN where missing


@dataclass
class EmotionData:
    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 FER label ids 0..6
    usage: np.ndarray | None  # object array of 'Training'/'PublicTest'/'PrivateTest', or None


def read_keypoints_csv(path) -> KeypointData:
    """Read a Kaggle ``training.csv``-layout file (plain or gzip) into images and keypoints."""
    path = _existing_file(path)
    size = KEYPOINT_IMAGE_SIZE
    table = read_table(path, KEYPOINT_IMAGE_COLUMN, size * size, required=KEYPOINT_COLUMNS)
    coords = np.empty((table.count, len(KEYPOINT_COLUMNS)), np.float64)
    raw = np.empty((table.count, len(KEYPOINT_COLUMNS)), object)
    for k, name in enumerate(KEYPOINT_COLUMNS):
        column = table.others[name]
        raw[:, k] = column.to_numpy(object)
        coords[:, k] = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    present = pd.notna(raw)
    non_numeric = present & np.isnan(coords)
    with np.errstate(invalid="ignore"):
        outside = ~(np.isnan(coords) | ((coords >= -KEYPOINT_MARGIN) & (coords <= size + KEYPOINT_MARGIN)))
    bad = non_numeric | outside
    if bad.any():
        i, k = divmod(int(np.argmax(bad.ravel())), bad.shape[1])
        name, row = KEYPOINT_COLUMNS[k], int(table.rows[i])
        if non_numeric[i, k]:
            raise located(path, f"{name} is not a number: {shown_value(raw[i, k])}", row)
        raise located(
            path,
            f"{name} = {coords[i, k]:g} is outside the {size}x{size} image "
            f"(allowed {-KEYPOINT_MARGIN:g} to {size + KEYPOINT_MARGIN:g})",
            row,
        )
    return KeypointData(table.pixels.reshape(-1, size, size), coords.astype(np.float32))


def read_fer_csv(path) -> EmotionData:
    """Read a ``fer2013.csv``-layout file (``emotion,pixels[,Usage]``, plain or gzip)."""
    path = _existing_file(path)
    size = EMOTION_IMAGE_SIZE
    table = read_table(path, FER_PIXEL_COLUMN, size * size, required=(FER_LABEL_COLUMN,))
    labels = _fer_labels(path, table.others[FER_LABEL_COLUMN], table.rows)
    usage = None
    if FER_USAGE_COLUMN in table.others.columns:
        usage = _fer_usage(path, table.others[FER_USAGE_COLUMN], table.rows)
    return EmotionData(table.pixels.reshape(-1, size, size), labels, usage)


def read_fer_folder(path, image_size: int = EMOTION_IMAGE_SIZE) -> EmotionData:
    """Read ``<root>/<class>/*.png|jpg`` or ``<root>/<train|val|test>/<class>/...`` as grayscale faces.

    Images are resized to ``image_size`` x ``image_size`` (INTER_AREA) where they differ. With split
    folders, usage is Training / PublicTest (val) / PrivateTest (test); without, usage is None.
    """
    root = Path(path)
    if not root.is_dir():
        raise located(root, "is not a folder of emotion images")
    folders = _subfolders(root)
    if not folders:
        raise located(root, "has no class folders (expected <class>/ or train/<class>/ folders of images)")
    split_names = [f for f in folders if f.name.lower() in SPLIT_FOLDERS]
    if split_names and len(split_names) != len(folders):
        odd = next(f for f in folders if f.name.lower() not in SPLIT_FOLDERS)
        raise located(odd, "is neither a split folder (train/val/test) nor allowed beside them")
    if split_names:
        jobs: list[tuple[Path, int, str]] = []
        ordered = sorted(split_names, key=lambda f: (SPLIT_ORDER.index(SPLIT_FOLDERS[f.name.lower()]), f.name))
        for split in ordered:
            usage = SPLIT_FOLDERS[split.name.lower()]
            jobs += [(file, label, usage) for file, label in _class_images(split)]
    else:
        jobs = [(file, label, "") for file, label in _class_images(root)]
    if not jobs:
        raise located(root, f"holds no images ({'/'.join(IMAGE_SUFFIXES)}) in its class folders")
    images = np.empty((len(jobs), image_size, image_size), np.uint8)

    def load(i: int) -> None:
        images[i] = _read_image(jobs[i][0], image_size)

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(load, range(len(jobs))))  # list() re-raises the first error
    labels = np.array([label for _, label, _ in jobs], np.int64)
    usage = np.array([u for _, _, u in jobs], object) if split_names else None
    return EmotionData(images, labels, usage)


def read_emotion_source(path, image_size: int = EMOTION_IMAGE_SIZE) -> EmotionData:
    """A FER CSV file (-> :func:`read_fer_csv`) or an image folder (-> :func:`read_fer_folder`).

    CSV faces are resized to ``image_size`` where it is not the file's 48.
    """
    path = Path(path)
    if path.is_dir():
        return read_fer_folder(path, image_size)
    data = read_fer_csv(path)
    if data.images.shape[1:] != (image_size, image_size):
        data.images = _resize_all(data.images, image_size)
    return data


# --- the files ----------------------------------------------------------------------------------


def _existing_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise located(path, "file not found")
    if not path.is_file():
        raise located(path, "is not a file")
    return path


# --- the small columns --------------------------------------------------------------------------


def _fer_labels(path: Path, column: pd.Series, rows: np.ndarray) -> np.ndarray:
    raw = column.to_numpy(object)
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values == np.round(values)) & (values >= 0) & (values < len(FER_LABELS))
    if ok.all():
        return values.astype(np.int64)
    i = int(np.argmin(ok))
    row, text = int(rows[i]), raw[i]
    if pd.isna(text):
        raise located(path, f"{FER_LABEL_COLUMN} label is missing", row)
    if np.isnan(values[i]) or values[i] != np.round(values[i]):
        raise located(
            path, f"{FER_LABEL_COLUMN} label {shown_value(text)} is not an integer 0-{len(FER_LABELS) - 1}", row
        )
    raise located(
        path,
        f"{FER_LABEL_COLUMN} label {values[i]:g} is outside 0-{len(FER_LABELS) - 1} "
        f"(FER ids: {', '.join(f'{k} {n}' for k, n in enumerate(FER_LABELS))})",
        row,
    )


def _fer_usage(path: Path, column: pd.Series, rows: np.ndarray) -> np.ndarray:
    canonical = {u.lower(): u for u in FER_USAGES}
    values = column.to_numpy(object)
    out = np.empty(len(values), object)
    cache: dict[object, str | None] = {}
    for i, value in enumerate(values):
        if value not in cache:
            cache[value] = canonical.get(value.strip().lower()) if isinstance(value, str) else None
        usage = cache[value]
        if usage is None:
            shown = "missing" if pd.isna(value) else shown_value(value)
            raise located(path, f"{FER_USAGE_COLUMN} is {shown}, expected one of {', '.join(FER_USAGES)}", int(rows[i]))
        out[i] = usage
    return out


# --- image folders ------------------------------------------------------------------------------


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_images(folder: Path) -> list[tuple[Path, int]]:
    found: list[tuple[Path, int]] = []
    classes = _subfolders(folder)
    if not classes:
        raise located(folder, "has no class folders (angry/, happy/, ...)")
    labelled = []
    for sub in classes:
        key = sub.name.strip().lower()
        if key not in EMOTION_ALIASES:
            known = ", ".join(sorted(EMOTION_ALIASES))
            raise located(sub, f"unknown emotion class folder '{sub.name}' (known names: {known})")
        labelled.append((EMOTION_ALIASES[key], sub.name, sub))
    for label, _, sub in sorted(labelled):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        found += [(p, label) for p in files]
    return found


def _read_image(file: Path, size: int) -> np.ndarray:
    import cv2  # only image folders need OpenCV

    try:
        data = np.fromfile(file, np.uint8)
    except OSError as exc:
        raise located(file, f"cannot be read: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if len(data) else None
    if image is None:
        raise located(file, "is not a readable image (corrupt or not PNG/JPEG)")
    if image.shape != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    import cv2

    out = np.empty((len(images), size, size), np.uint8)
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return out
