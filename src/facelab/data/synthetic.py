"""Seeded synthetic faces: the data every pipeline run has without a download.

Every random choice of every face is drawn up front (``_sample_params``); the faces are then
painted by :mod:`facelab.data.face_drawing` (grayscale head, hair, ears, eyes with whites, iris
and pupil, brows, nose, lips, as anti-aliased polygons on a canvas twice the target size, with
the 15 Kaggle keypoints taken from the same geometry), halved, and given lighting, contrast,
blur and noise.

Expressions change the drawing: mouth curve and opening, teeth, lip raise, brow height
and angle, eye opening, wrinkles. Each face draws its expression at a random intensity
with per-parameter noise, so classes overlap the way real ones do.

Public API: ``make_keypoint_faces``, ``make_emotion_faces`` (arrays) and
``write_synthetic_keypoints_csv``, ``write_synthetic_fer_csv`` (files in the real Kaggle
and fer2013.csv layouts). The same seed gives byte-identical output. numpy + cv2 only.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import cv2
import numpy as np

from facelab.atomic import atomic_path
from facelab.data.face_drawing import FRAME, SUPERSAMPLE, paint
from facelab.errors import FacelabError
from facelab.formats import (
    EMOTION_IMAGE_SIZE,
    FER_COLUMNS,
    FER_LABELS,
    FER_USAGE_TRAIN,
    FER_USAGE_VAL,
    KEYPOINT_COLUMNS,
    KEYPOINT_IMAGE_COLUMN,
    KEYPOINT_IMAGE_SIZE,
    KEYPOINT_NAMES,
)

# --- constants --------------------------------------------------------------------------------

CHUNK = 256  # faces drawn, post-processed or written per batch (bounds memory)
GZIP_LEVEL = 1  # ".gz" outputs: fast; noisy pixels barely compress further anyway

ROTATION_DEG = 15.0
SCALE_RANGE = (0.86, 1.07)
YAW_UNITS = 2.5  # inner features slide sideways by up to this much (face-frame units)

NOISE_SIGMA = (1.0, 7.0)  # gaussian pixel noise, 0-255 scale
BLUR_PROBABILITY = 0.3
BLUR_SIGMA = (0.8, 1.8)  # face-frame units (1/96 of the image side)
LIGHT_GRADIENT = 0.7  # max brightness change across the frame (fraction)
CONTRAST_RANGE = (0.7, 1.2)
BRIGHTNESS_SHIFT = 25.0

# FER2013 training-set class counts (angry, disgust, fear, happy, sad, surprise, neutral);
# disgust is lifted to MIN_CLASS_FRACTION so small sets still hold every class.
FER2013_TRAIN_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)
MIN_CLASS_FRACTION = 0.055
EMOTION_INTENSITY = (0.45, 1.25)
KEYPOINT_INTENSITY = (0.0, 1.0)

# Expression parameters: deltas from the neutral face at full intensity (face-frame units;
# brow dy > 0 moves a brow down; eye_up/eye_low widen the eye above/below its corner line).
EXPRESSION_PARAMS = (
    "smile",
    "mouth_open",
    "mouth_round",
    "mouth_wide",
    "lip_raise",
    "lip_press",
    "asym",
    "brow_in_dy",
    "brow_out_dy",
    "brow_in_dx",
    "brow_arch",
    "eye_up",
    "eye_low",
    "nose_wrinkle",
    "fold",
    "forehead",
    "glabella",
)
EXPRESSIONS: dict[str, dict[str, float]] = {
    "angry": dict(
        smile=-1.2,
        mouth_wide=-2.0,
        lip_press=0.6,
        brow_in_dy=4.0,
        brow_out_dy=-0.8,
        brow_in_dx=-2.0,
        brow_arch=-1.5,
        eye_up=-1.4,
        eye_low=-0.8,
        glabella=1.0,
        fold=0.4,
    ),
    "disgust": dict(
        smile=-1.5,
        mouth_open=1.0,
        lip_raise=2.8,
        asym=1.8,
        mouth_wide=-1.5,
        brow_in_dy=2.4,
        brow_in_dx=-1.2,
        brow_out_dy=0.6,
        eye_up=-1.3,
        eye_low=-1.1,
        nose_wrinkle=1.0,
        fold=1.1,
    ),
    "fear": dict(
        smile=-1.2,
        mouth_open=2.6,
        mouth_wide=3.0,
        brow_in_dy=-3.2,
        brow_out_dy=-1.0,
        brow_in_dx=-1.0,
        brow_arch=-1.3,
        eye_up=1.7,
        eye_low=0.4,
        forehead=0.7,
    ),
    "happy": dict(
        smile=5.0,
        mouth_open=1.6,
        mouth_wide=3.0,
        brow_in_dy=-0.5,
        brow_out_dy=-0.5,
        eye_up=-0.4,
        eye_low=-1.0,
        fold=1.0,
    ),
    "sad": dict(
        smile=-3.8,
        mouth_wide=-1.5,
        lip_press=0.2,
        brow_in_dy=-3.2,
        brow_out_dy=1.3,
        brow_arch=-0.6,
        eye_up=-1.0,
        glabella=0.3,
    ),
    "surprise": dict(
        mouth_open=5.5,
        mouth_round=1.0,
        mouth_wide=-5.0,
        brow_in_dy=-4.5,
        brow_out_dy=-4.0,
        brow_arch=1.5,
        eye_up=2.0,
        eye_low=0.5,
        forehead=1.0,
    ),
    "neutral": dict(),
    "angry_open": dict(
        smile=-1.0,
        mouth_open=3.6,
        mouth_wide=0.5,
        brow_in_dy=4.0,
        brow_out_dy=-0.8,
        brow_in_dx=-2.0,
        brow_arch=-1.5,
        eye_up=-1.2,
        eye_low=-0.8,
        glabella=1.0,
        fold=0.7,
    ),
}
EXPRESSION_ROWS = FER_LABELS + ("angry_open",)
ANGRY_OPEN_FRACTION = 0.35
TEETH_PROBABILITY = dict(
    angry=0.0, disgust=0.6, fear=0.4, happy=0.65, sad=0.0, surprise=0.15, neutral=0.0, angry_open=1.0
)
EXPRESSION_NOISE = dict(
    smile=0.6,
    mouth_open=0.5,
    mouth_round=0.1,
    mouth_wide=1.0,
    lip_raise=0.3,
    lip_press=0.1,
    asym=0.4,
    brow_in_dy=0.8,
    brow_out_dy=0.6,
    brow_in_dx=0.4,
    brow_arch=0.4,
    eye_up=0.35,
    eye_low=0.3,
    nose_wrinkle=0.1,
    fold=0.15,
    forehead=0.1,
    glabella=0.1,
)


# --- parameters -------------------------------------------------------------------------------


def _class_counts(n: int) -> np.ndarray:
    """Faces per FER class: FER2013's training mix, disgust lifted, largest-remainder rounding."""
    share = np.asarray(FER2013_TRAIN_COUNTS, float)
    share /= share.sum()
    low = share < MIN_CLASS_FRACTION
    share[low] = MIN_CLASS_FRACTION
    share[~low] *= (1.0 - share[low].sum()) / share[~low].sum()
    exact = share * n
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _sample_params(rng: np.random.Generator, labels: np.ndarray, intensity: np.ndarray) -> dict[str, np.ndarray]:
    """Every random choice of every face, drawn up front in a fixed order (vectorised)."""
    n = len(labels)
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    p: dict[str, np.ndarray] = {}
    # pose
    p["rot"] = np.deg2rad(u(-ROTATION_DEG, ROTATION_DEG))
    p["scale"], p["shift_x"], p["shift_y"], p["yaw"] = u(*SCALE_RANGE), u(-1, 1), u(-1, 1), u(-1, 1) * YAW_UNITS
    # identity: head, eyes, brows, nose, mouth, hair
    p["fw"], p["fh"], p["fc"], p["jaw"] = u(37.5, 42.0), u(45.0, 50.0), u(-3.0, 0.0), u(0.12, 0.3)
    p["ex"], p["ey"], p["ew"], p["tilt"] = u(16.5, 19.5), u(-14.0, -11.0), u(6.6, 8.0), u(-0.5, 0.9)
    p["hu"], p["hl"], p["gaze"] = u(3.1, 3.8), u(2.2, 2.9), u(-0.1, 0.1)
    p["iris"], p["pupil"] = u(0.4, 0.48), u(0.42, 0.52)  # iris radius / eye half-width, pupil / iris
    p["bx_in"], p["bx_out"], p["by"], p["by_out"] = u(7.5, 10.0), u(28.5, 31.5), u(-23.0, -20.0), u(-0.5, 2.0)
    p["brow_arch0"], p["brow_w"] = u(1.5, 3.0), u(1.2, 2.0)
    p["nose_y"], p["nose_w"] = u(10.0, 13.0), u(4.0, 5.8)
    p["my"], p["mw"], p["tu"], p["tl"] = u(25.0, 27.5), u(13.0, 16.0), u(2.0, 3.0), u(2.6, 3.8)
    p["hairline"], p["hair_curve"], p["hair_tilt"] = u(-40.0, -29.0), u(5.0, 14.0), u(-5.0, 5.0)
    p["hair_style"] = rng.choice(3, n, p=(0.55, 0.35, 0.10))  # face_drawing's HAIR_SHORT, HAIR_LONG, HAIR_BALD
    # tones (0-255 before lighting)
    skin = u(85.0, 215.0)
    bg = u(0.0, 255.0)
    close = np.abs(bg - skin) < 35.0
    bg = np.where(close, np.where(skin > 128.0, skin - 35.0 - u(0, 60), skin + 35.0 + u(0, 30)), bg)
    p["skin"], p["bg"] = skin, np.clip(bg, 0.0, 255.0)
    blond = rng.random(n) < 0.15
    p["hair"] = np.where(blond, np.clip(skin + u(-40, 10), 0, 255), u(10.0, 110.0))
    p["brow"] = np.minimum(np.where(blond, skin - 55.0, p["hair"] + u(0, 25)), skin - 50.0).clip(5.0, 255.0)
    p["clothes"], p["lip_d"], p["socket_d"] = u(0.0, 255.0), u(25.0, 55.0), u(6.0, 20.0)
    p["sclera"], p["iris_c"], p["pupil_c"] = u(175.0, 240.0), skin * u(0.2, 0.6), u(5.0, 25.0)
    p["teeth_c"], p["cavity_c"] = u(175.0, 235.0), u(15.0, 45.0)
    p["blob_on"], p["blob_x"], p["blob_y"] = rng.random(n) < 0.6, u(-1, 1), u(-40.0, 60.0)
    p["blob_a"], p["blob_b"], p["blob_c"] = u(12.0, 40.0), u(12.0, 40.0), u(0.0, 255.0)
    # expression
    rows = labels.astype(np.int64).copy()
    angry_open = (labels == FER_LABELS.index("angry")) & (rng.random(n) < ANGRY_OPEN_FRACTION)
    rows[angry_open] = EXPRESSION_ROWS.index("angry_open")
    proto = np.array([[EXPRESSIONS[row].get(k, 0.0) for k in EXPRESSION_PARAMS] for row in EXPRESSION_ROWS])
    noise = np.array([EXPRESSION_NOISE[k] for k in EXPRESSION_PARAMS])
    values = proto[rows] * intensity[:, None] + rng.standard_normal((n, len(EXPRESSION_PARAMS))) * noise
    for j, name in enumerate(EXPRESSION_PARAMS):
        p[name] = values[:, j]
    p["asym"] = p["asym"] * np.where(rng.random(n) < 0.5, -1.0, 1.0)
    for name in ("mouth_open", "lip_raise", "nose_wrinkle", "fold", "forehead", "glabella"):
        p[name] = np.maximum(p[name], 0.0)
    p["mouth_round"] = p["mouth_round"].clip(0.0, 1.0)
    p["lip_press"] = p["lip_press"].clip(0.0, 0.8)
    p["teeth"] = rng.random(n) < np.array([TEETH_PROBABILITY[r] for r in EXPRESSION_ROWS])[rows]
    # photometric
    p["light"], p["light_dir"] = u(0.0, LIGHT_GRADIENT), u(0.0, 2.0 * np.pi)
    p["contrast"], p["brightness"] = u(*CONTRAST_RANGE), u(-BRIGHTNESS_SHIFT, BRIGHTNESS_SHIFT)
    p["noise"], p["blur"] = u(*NOISE_SIGMA), np.where(rng.random(n) < BLUR_PROBABILITY, u(*BLUR_SIGMA), 0.0)
    p["label"] = labels.astype(np.int64)
    return p


# --- rendering: paint (facelab.data.face_drawing), halve, photograph ---------------------------


def _finish(images: np.ndarray, p: dict, rng: np.random.Generator, clean: bool) -> np.ndarray:
    """Lighting gradient, contrast, blur and noise over a batch of float faces -> uint8."""
    n, size, _ = images.shape
    if not clean:
        column = lambda v: v.astype(np.float32)[:, None, None]  # noqa: E731
        coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) / size
        gx, gy = column(np.cos(p["light_dir"]) * p["light"]), column(np.sin(p["light_dir"]) * p["light"])
        images *= 1.0 + gx * coords[None, None, :] + gy * coords[None, :, None]
        images -= 128.0
        images *= column(p["contrast"])
        images += 128.0 + column(p["brightness"])
        for i in np.flatnonzero(p["blur"] > 0):
            images[i] = cv2.GaussianBlur(images[i], (0, 0), float(p["blur"][i]) * size / FRAME)
        images += rng.standard_normal(images.shape, dtype=np.float32) * column(p["noise"])
    np.clip(images, 0.0, 255.0, out=images)
    return np.rint(images).astype(np.uint8)


def _downsample(canvas: np.ndarray) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks of a uint8 batch -> float32 batch."""
    rows = sum(canvas[:, k::SUPERSAMPLE, :].astype(np.uint16) for k in range(SUPERSAMPLE))
    blocks = sum(rows[:, :, k::SUPERSAMPLE] for k in range(SUPERSAMPLE))
    return blocks.astype(np.float32) * np.float32(1.0 / SUPERSAMPLE**2)


def _render(p: dict, size: int, rng: np.random.Generator, clean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, size, size) uint8 and keypoints (n, 30) float32 of sampled faces.

    ``clean=True`` skips lighting, contrast, blur and noise (tests use it to look at the drawing).
    """
    n = len(p["label"])
    big = SUPERSAMPLE * size
    images = np.empty((n, size, size), np.uint8)
    keypoints = np.empty((n, 2 * len(KEYPOINT_NAMES)), np.float32)
    for start in range(0, n, CHUNK):
        rows = slice(start, min(start + CHUNK, n))
        canvas = np.empty((rows.stop - start, big, big), np.uint8)
        batch = {k: v[rows] for k, v in p.items()}
        keypoints[rows] = paint(canvas, batch, size).reshape(len(canvas), -1)
        images[rows] = _finish(_downsample(canvas), batch, rng, clean)
    return images, keypoints


# --- public API -------------------------------------------------------------------------------


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise FacelabError(f"synthetic: the number of faces must be a whole number >= 0, got {n!r}")


def make_keypoint_faces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded 96x96 faces: images uint8 (n, 96, 96) and keypoints float32 (n, 30).

    Keypoints are in formats.KEYPOINT_COLUMNS order (x then y of each keypoint, pixel
    coordinates); every face wears a random expression at a random intensity.
    """
    _check_count(n)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(FER_LABELS), n)
    params = _sample_params(rng, labels, rng.uniform(*KEYPOINT_INTENSITY, n))
    return _render(params, KEYPOINT_IMAGE_SIZE, rng)


def make_emotion_faces(n: int, seed: int, size: int = EMOTION_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded faces with expressions: images uint8 (n, size, size), labels int64 FER ids 0..6.

    Classes follow FER2013's training mix (disgust lifted to ~5%), in a seeded random order.
    """
    _check_count(n)
    if size < 8:
        raise FacelabError(f"synthetic: emotion image size must be at least 8 pixels, got {size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(FER_LABELS)), _class_counts(n)))
    params = _sample_params(rng, labels, rng.uniform(*EMOTION_INTENSITY, n))
    images, _ = _render(params, size, rng)
    return images, labels.astype(np.int64)


def _digit_table() -> np.ndarray:
    """Each value 0-255 as ASCII digits and a space, zero-padded to 4 bytes, packed in one uint32."""
    table = np.zeros((256, 4), np.uint8)
    for value in range(256):
        text = f"{value} ".encode("ascii")
        table[value, : len(text)] = np.frombuffer(text, np.uint8)
    return table.view(np.uint32).ravel()


_DIGITS = _digit_table()


def _pixel_text(images: np.ndarray) -> tuple[bytes, np.ndarray]:
    """All images as space-separated decimal text, rows back to back, and each row's end offset.

    Vectorised: every pixel's 4 padded bytes come from a lookup table; the zero padding is
    dropped. Each row's text ends with one separator space (callers leave it out).
    """
    flat = images.reshape(len(images), -1)
    parts, ends, offset = [], [], 0
    for start in range(0, len(flat), CHUNK):
        raw = _DIGITS[flat[start : start + CHUNK]].view(np.uint8)
        keep = raw != 0
        row_ends = offset + np.cumsum(keep.sum(1))
        parts.append(raw[keep].tobytes())
        ends.append(row_ends)
        offset = int(row_ends[-1])
    return b"".join(parts), np.concatenate(ends) if ends else np.zeros(0, np.int64)


def _rows(header: str, images: np.ndarray, prefixes: list[str], suffixes: list[str]) -> bytes:
    """A header line, then one line ``prefix + pixels + suffix`` per image, as one bytes object."""
    text, ends = _pixel_text(images)
    view = memoryview(text)
    pieces, start = [header.encode("ascii")], 0
    for prefix, end, suffix in zip(prefixes, ends.tolist(), suffixes):
        pieces += (prefix.encode("ascii"), view[start : end - 1], suffix.encode("ascii"))
        start = end
    return b"".join(pieces)


def _write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write atomically; a ``.gz`` path is gzip-compressed (reproducibly: no name, no time stamp)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".gz":
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as out,
            ):
                out.write(data)
        else:
            tmp.write_bytes(data)


def write_synthetic_keypoints_csv(path: str | os.PathLike, n: int, seed: int) -> None:
    """Write ``n`` synthetic faces as a Kaggle ``training.csv``-layout file (``.gz`` -> gzip).

    Header: the 30 keypoint columns then ``Image``; coordinates with 4 decimals; Image is
    9216 space-separated 0-255 values.
    """
    images, keypoints = make_keypoint_faces(n, seed)
    header = ",".join(KEYPOINT_COLUMNS + (KEYPOINT_IMAGE_COLUMN,)) + "\n"
    prefixes = [",".join(f"{v:.4f}" for v in row) + "," for row in keypoints.tolist()]
    _write_bytes(path, _rows(header, images, prefixes, ["\n"] * n))


def write_synthetic_fer_csv(path: str | os.PathLike, n: int, seed: int, test_fraction: float = 0.2) -> None:
    """Write ``n`` synthetic 48x48 faces as a ``fer2013.csv``-layout file (``emotion,pixels,Usage``).

    Rows are in a seeded random order; the first (1 - test_fraction) are ``Training``, the
    rest ``PublicTest``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise FacelabError(f"synthetic: test_fraction must be in [0, 1), got {test_fraction}")
    images, labels = make_emotion_faces(n, seed, EMOTION_IMAGE_SIZE)
    n_train = n - int(round(n * test_fraction))
    suffixes = [f",{FER_USAGE_TRAIN}\n" if i < n_train else f",{FER_USAGE_VAL}\n" for i in range(n)]
    header = ",".join(FER_COLUMNS) + "\n"
    _write_bytes(path, _rows(header, images, [f"{label}," for label in labels.tolist()], suffixes))
