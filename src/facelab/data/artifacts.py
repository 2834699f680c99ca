"""The pipeline's files: where each data split and model lives, how splits are read and written,
and which files each stage reads.

``STAGE_INPUTS`` is the one place a stage's file inputs are written in Python; stage code gets its
input paths only through ``stage_files(stage)`` (an undeclared name is an error), and
``tests/code/test_structure.py`` fails when ``dvc.yaml``'s ``deps`` of a stage differ from it (or
miss a facelab module the stage imports). Paths are relative to the stage's working copy, as DVC
tracks them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from facelab.atomic import atomic_path
from facelab.config import AUGMENTED_DIR, MODELS_DIR, PREPARED_DIR
from facelab.errors import FacelabError

SPLITS = ("train", "val", "test")
TASKS = ("keypoints", "emotion")
HASH_CHUNK = 1 << 20


def split_path(task: str, split: str) -> Path:
    """data/prepared/<task>_<split>.npz, written by ``prepare``."""
    return PREPARED_DIR / f"{task}_{split}.npz"


AUGMENTED_KEYPOINTS_TRAIN = AUGMENTED_DIR / "keypoints_train.npz"
KEYPOINT_MODEL = MODELS_DIR / "keypoints.keras"
EMOTION_MODEL = MODELS_DIR / "emotion.keras"
# The registry versions evaluate chose as champions: combine's declared input (git-ignored, a DVC output).
CHAMPIONS_FILE = MODELS_DIR / "champions.json"

# Each stage's file inputs, by name. `prepare` reads files named by parameters (data.*.path), outside the repo.
STAGE_INPUTS: dict[str, dict[str, Path]] = {
    "prepare": {},
    "augment": {"keypoints_train": split_path("keypoints", "train"), "emotion_train": split_path("emotion", "train")},
    "train_keypoints": {"keypoints_train": AUGMENTED_KEYPOINTS_TRAIN, "keypoints_val": split_path("keypoints", "val")},
    "train_emotion": {"emotion_train": split_path("emotion", "train"), "emotion_val": split_path("emotion", "val")},
    "evaluate": {
        "keypoints_model": KEYPOINT_MODEL,
        "emotion_model": EMOTION_MODEL,
        "keypoints_test": split_path("keypoints", "test"),
        "emotion_test": split_path("emotion", "test"),
        # the trivial baselines: the training set's mean keypoints and majority class
        "keypoints_train": AUGMENTED_KEYPOINTS_TRAIN,
        "emotion_train": split_path("emotion", "train"),
    },
    "combine": {"champions": CHAMPIONS_FILE, "keypoints_test": split_path("keypoints", "test")},
}


class _Declared(dict):
    def __init__(self, stage: str, files: dict[str, Path]):
        super().__init__(files)
        self.stage = stage

    def __missing__(self, name: str):
        raise KeyError(
            f"stage {self.stage} reads {name!r}, which it does not declare "
            "(facelab.data.artifacts.STAGE_INPUTS and dvc.yaml deps)"
        )


def stage_files(stage: str) -> Mapping[str, Path]:
    """The files ``stage`` may read, by name (a KeyError for any other)."""
    return MappingProxyType(_Declared(stage, STAGE_INPUTS[stage]))


def save_split(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_split(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise FacelabError(f"{path}: not found (run the stage that writes it: dvc repro)") from None


def file_md5(path: str | Path) -> str:
    """The md5 of a file's bytes: what DVC records for it in dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def arrays_digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' shapes, dtypes and bytes: the same data gives the same digest anywhere."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
