"""The ``prepare`` stage: raw faces (synthetic or the user's files) -> split uint8 arrays.

Reads every source through the same loaders (the synthetic default is first written as a
Kaggle-layout CSV and a fer2013.csv-layout CSV), handles missing keypoints, keeps the
configured emotion classes, splits train/val/test with a seeded shuffle (or the file's
``Usage`` column, or a given test file) and writes ``data/prepared/*.npz`` plus pictures
of sample faces and class counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from facelab.atomic import write_json
from facelab.config import METRICS_DIR, RAW_DIR, REPORTS_DIR, user_path
from facelab.data import readers, synthetic
from facelab.data.artifacts import SPLITS, save_split, split_path
from facelab.errors import FacelabError
from facelab.formats import FER_USAGE_TEST, FER_USAGE_TRAIN, FER_USAGE_VAL, fer_label_id
from facelab.reports import pictures
from facelab.tracking import store
from facelab.tracking.provenance import phase

SYNTHETIC_KEYPOINTS_CSV = RAW_DIR / "synthetic-keypoints.csv"
SYNTHETIC_FER_CSV = RAW_DIR / "synthetic-fer2013.csv"


# --- keypoints --------------------------------------------------------------------------------


def _missing(data: readers.KeypointData, policy: str, source: Path) -> readers.KeypointData:
    complete = ~np.isnan(data.keypoints).any(axis=1)
    if policy == "drop":
        if not complete.any():
            raise FacelabError(
                f"{source}: no row has all 30 keypoint coordinates (data.keypoints.missing: drop); "
                "use missing: mask to train on partial rows"
            )
        return readers.KeypointData(data.images[complete], data.keypoints[complete])
    has_any = ~np.isnan(data.keypoints).all(axis=1)
    if not has_any.any():
        raise FacelabError(f"{source}: no row has any keypoint coordinate")
    return readers.KeypointData(data.images[has_any], data.keypoints[has_any])


def split_keypoints(cfg: dict, seed: int, synthetic_count: int) -> dict[str, readers.KeypointData]:
    if cfg["source"] == "synthetic":
        path, test_path = SYNTHETIC_KEYPOINTS_CSV, None
        synthetic.write_synthetic_keypoints_csv(path, synthetic_count, seed)
    else:
        path = user_path(cfg["path"])
        test_path = user_path(cfg["test_path"]) if cfg["test_path"] else None
    data = _missing(readers.read_keypoints_csv(path), cfg["missing"], path)
    index = np.arange(len(data.images))
    if test_path is not None:
        test = _missing(readers.read_keypoints_csv(test_path), cfg["missing"], test_path)
        rest = index
    else:
        rest, test_idx = train_test_split(index, test_size=cfg["test_fraction"], random_state=seed, shuffle=True)
        test = readers.KeypointData(data.images[test_idx], data.keypoints[test_idx])
    train_idx, val_idx = train_test_split(rest, test_size=cfg["val_fraction"], random_state=seed + 1, shuffle=True)
    return {
        "train": readers.KeypointData(data.images[train_idx], data.keypoints[train_idx]),
        "val": readers.KeypointData(data.images[val_idx], data.keypoints[val_idx]),
        "test": test,
    }


# --- emotion ----------------------------------------------------------------------------------


def _keep_classes(data: readers.EmotionData, classes: list[str]) -> readers.EmotionData:
    """Rows of the configured classes only, labels renumbered 0..K-1 in the order given."""
    ids = np.array([fer_label_id(name) for name in classes])
    lookup = np.full(7, -1, np.int64)
    lookup[ids] = np.arange(len(ids))
    new_labels = lookup[data.labels]
    keep = new_labels >= 0
    usage = data.usage[keep] if data.usage is not None else None
    return readers.EmotionData(data.images[keep], new_labels[keep], usage)


def _subset(data: readers.EmotionData, mask_or_index) -> readers.EmotionData:
    usage = data.usage[mask_or_index] if data.usage is not None else None
    return readers.EmotionData(data.images[mask_or_index], data.labels[mask_or_index], usage)


def _stratified(labels: np.ndarray, fraction: float, seed: int, index: np.ndarray):
    counts = np.bincount(labels[index])
    stratify = labels[index] if counts[counts > 0].min() >= 2 else None
    return train_test_split(index, test_size=fraction, random_state=seed, shuffle=True, stratify=stratify)


def split_emotion(cfg: dict, seed: int, synthetic_count: int) -> dict[str, readers.EmotionData]:
    classes = list(cfg["classes"])
    if cfg["source"] == "synthetic":
        path, test_path = SYNTHETIC_FER_CSV, None
        synthetic.write_synthetic_fer_csv(path, synthetic_count, seed)
    else:
        path = user_path(cfg["path"])
        test_path = user_path(cfg["test_path"]) if cfg["test_path"] else None
    data = _keep_classes(readers.read_emotion_source(path), classes)
    usage = data.usage if data.usage is not None else np.full(len(data.labels), "", object)
    if test_path is not None:
        test = _keep_classes(readers.read_emotion_source(test_path), classes)
        pool = np.flatnonzero(usage != FER_USAGE_TEST)
        train_idx, val_idx = _stratified(data.labels, cfg["val_fraction"], seed + 1, pool)
        val = _subset(data, val_idx)
    elif (usage == FER_USAGE_TEST).any():
        test = _subset(data, usage == FER_USAGE_TEST)
        if (usage == FER_USAGE_VAL).any():
            train_idx, val = np.flatnonzero(usage == FER_USAGE_TRAIN), _subset(data, usage == FER_USAGE_VAL)
        else:
            train_idx, val_idx = _stratified(
                data.labels, cfg["val_fraction"], seed + 1, np.flatnonzero(usage == FER_USAGE_TRAIN)
            )
            val = _subset(data, val_idx)
    elif (usage == FER_USAGE_VAL).any():
        # fer2013 without PrivateTest: PublicTest is the test set, validation comes out of Training.
        test = _subset(data, usage == FER_USAGE_VAL)
        train_idx, val_idx = _stratified(
            data.labels, cfg["val_fraction"], seed + 1, np.flatnonzero(usage != FER_USAGE_VAL)
        )
        val = _subset(data, val_idx)
    else:
        rest, test_idx = _stratified(data.labels, cfg["test_fraction"], seed, np.arange(len(data.labels)))
        test = _subset(data, test_idx)
        train_idx, val_idx = _stratified(data.labels, cfg["val_fraction"], seed + 1, rest)
        val = _subset(data, val_idx)
    train = _subset(data, train_idx)
    counts = np.bincount(train.labels, minlength=len(classes))
    for name, count in zip(classes, counts):
        if count == 0:
            raise FacelabError(
                f"{path}: class {name!r} has no training examples after filtering (data.emotion.classes)"
            )
    return {"train": train, "val": val, "test": test}


# --- the stage --------------------------------------------------------------------------------


def run(params: dict) -> dict:
    """Run the prepare stage; returns the counts it wrote to metrics/prepare.json."""
    seed = params["seed"]
    data_cfg = params["data"]
    classes = list(data_cfg["emotion"]["classes"])
    logged = {"seed": seed, "data": data_cfg, "synthetic": params["synthetic"]}
    with store.stage_run("prepare", logged, params["tracking"]["experiment"]):
        with phase("load"):  # reading (or drawing) the faces and splitting them
            keypoints = split_keypoints(data_cfg["keypoints"], seed, params["synthetic"]["keypoint_faces"])
            emotion = split_emotion(data_cfg["emotion"], seed, params["synthetic"]["emotion_faces"])
        with phase("save"):
            for split in SPLITS:
                save_split(
                    split_path("keypoints", split),
                    images=keypoints[split].images,
                    keypoints=keypoints[split].keypoints.astype(np.float32),
                )
                save_split(
                    split_path("emotion", split),
                    images=emotion[split].images,
                    labels=emotion[split].labels.astype(np.int64),
                    classes=np.array(classes),
                )
        summary = {
            "keypoints": {split: len(keypoints[split].images) for split in SPLITS},
            "emotion": {split: len(emotion[split].images) for split in SPLITS},
            "emotion_train_per_class": dict(
                zip(classes, np.bincount(emotion["train"].labels, minlength=len(classes)).tolist())
            ),
        }
        reports = REPORTS_DIR / "prepare"
        sample = keypoints["train"]
        with phase("pictures"):
            pictures.face_grid(
                reports / "keypoint_samples.png",
                sample.images[:16],
                keypoints=sample.keypoints[:16],
                columns=4,
                suptitle="training faces with their keypoints",
            )
            pictures.emotion_samples(
                reports / "emotion_samples.png", emotion["train"].images, emotion["train"].labels, classes
            )
        with phase("save"):
            write_json(METRICS_DIR / "prepare.json", summary)
        with phase("log"):
            store.log_metrics(summary)
            store.log_artifacts(reports / "keypoint_samples.png", reports / "emotion_samples.png", folder="prepare")
    return summary
