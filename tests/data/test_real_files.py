"""facelab.data.readers on the real faces in ../shared/data (skipped where that folder is absent).

Slices of ~200 rows are written to tmp_path (the real files are never copied into the repo);
the full FER file is read once, as it takes about a second.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facelab.config import SHARED_DATA
from facelab.data import readers
from facelab.formats import FER_LABELS, KEYPOINT_COLUMNS

pytestmark = pytest.mark.realdata

DATA = Path(__file__).resolve().parents[2] / SHARED_DATA
YTF_TRAIN = DATA / "keypoints" / "ytf-keypoints-train.csv.gz"
YTF_VAL = DATA / "keypoints" / "ytf-keypoints-val.csv.gz"
FER_FILE = DATA / "fer2013" / "fer2013-train-publictest.csv.gz"
SLICE_ROWS = 200

# From ../shared/data/README.md.
FER_ROWS = 32_298
FER_USAGE_COUNTS = {"Training": 28_709, "PublicTest": 3_589}
FER_TRAINING_CLASS_COUNTS = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "sad": 4830,
    "surprise": 3171,
    "neutral": 4965,
}


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


def head(source: Path, target: Path, rows: int = SLICE_ROWS) -> Path:
    """Write the header and the first ``rows`` data lines of a gzip CSV (gzip again if target ends .gz)."""
    with gzip.open(source, "rb") as fh:
        lines = [fh.readline() for _ in range(rows + 1)]
    data = b"".join(lines)
    target.write_bytes(gzip.compress(data, compresslevel=1) if target.suffix == ".gz" else data)
    return target


def naive_pixels(path: Path, column: str) -> np.ndarray:
    strings = pd.read_csv(path, dtype={column: object})[column]
    return np.stack([np.array(s.split(), dtype=np.uint8) for s in strings])


@pytest.mark.parametrize("source", [YTF_TRAIN, YTF_VAL], ids=["train", "val"])
def test_ytf_keypoints_slice(tmp_path, source):
    path = head(need(source), tmp_path / "ytf-head.csv.gz")
    data = readers.read_keypoints_csv(path)
    assert data.images.shape == (SLICE_ROWS, 96, 96) and data.images.dtype == np.uint8
    assert data.keypoints.shape == (SLICE_ROWS, 30) and data.keypoints.dtype == np.float32
    assert not np.isnan(data.keypoints).any()
    assert data.keypoints.min() >= 0 and data.keypoints.max() <= 96
    # "left" is the person's left, on the image's right.
    left_x = data.keypoints[:, KEYPOINT_COLUMNS.index("left_eye_center_x")]
    right_x = data.keypoints[:, KEYPOINT_COLUMNS.index("right_eye_center_x")]
    assert (left_x - right_x).mean() > 10
    assert (left_x > right_x).mean() > 0.95
    # Eyes above the mouth (image y grows downwards).
    eye_y = data.keypoints[:, KEYPOINT_COLUMNS.index("left_eye_center_y")]
    mouth_y = data.keypoints[:, KEYPOINT_COLUMNS.index("mouth_center_bottom_lip_y")]
    assert (eye_y < mouth_y).all()
    assert data.images.std(axis=(1, 2)).min() > 1  # real faces, not blank frames
    np.testing.assert_array_equal(data.images.reshape(SLICE_ROWS, -1), naive_pixels(path, "Image"))


def test_ytf_val_full_file():
    data = readers.read_keypoints_csv(need(YTF_VAL))
    assert data.images.shape == (763, 96, 96)
    assert not np.isnan(data.keypoints).any()


def test_fer_slice(tmp_path):
    path = head(need(FER_FILE), tmp_path / "fer-head.csv")
    data = readers.read_fer_csv(path)
    assert data.images.shape == (SLICE_ROWS, 48, 48) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.labels.shape == (SLICE_ROWS,)
    assert data.labels.min() >= 0 and data.labels.max() <= 6
    assert data.usage is not None and set(data.usage.tolist()) <= set(FER_USAGE_COUNTS)
    np.testing.assert_array_equal(data.images.reshape(SLICE_ROWS, -1), naive_pixels(path, "pixels"))


def test_fer_full_file():
    data = readers.read_fer_csv(need(FER_FILE))
    assert data.images.shape == (FER_ROWS, 48, 48)
    assert data.labels.min() >= 0 and data.labels.max() <= 6
    usage, counts = np.unique(data.usage.astype(str), return_counts=True)
    assert dict(zip(usage.tolist(), counts.tolist())) == FER_USAGE_COUNTS
    training = np.bincount(data.labels[data.usage == "Training"], minlength=7)
    assert dict(zip(FER_LABELS, training.tolist())) == FER_TRAINING_CLASS_COUNTS
