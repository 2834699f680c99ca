"""The ``augment`` stage: the expanded keypoint training set and previews of both augmentations.

Writes ``data/augmented/keypoints_train.npz`` (the prepared training faces followed by
``augment.keypoints.copies`` augmented copies of each, ``facelab.data.augmentation``) and
``reports/augment/*.png``: prepared faces above augmented ones, keypoints moved with the pixels,
and three on-the-fly draws of the emotion augmentation layers.
"""

from __future__ import annotations

import numpy as np

from facelab.config import REPORTS_DIR
from facelab.data import artifacts
from facelab.data.augmentation import augment_keypoint_faces, emotion_augmenter, expand_keypoint_training_set
from facelab.reports import pictures
from facelab.tracking import store
from facelab.tracking.provenance import phase

STAGE = "augment"

PREVIEW_FACES = 8


def run(params: dict) -> dict:
    """The ``augment`` stage: expanded keypoint training set + preview pictures of both augmentations."""
    files = artifacts.stage_files(STAGE)
    cfg = params["augment"]
    seed = params["seed"]
    coordinates = params["data"]["keypoints"]["coordinates"]
    logged = {"seed": seed, "augment": cfg, "data.keypoints.coordinates": coordinates}
    with store.stage_run(STAGE, logged, params["tracking"]["experiment"]):
        with phase("load"):
            train = artifacts.load_split(files["keypoints_train"])
        kp_cfg = {**cfg["keypoints"], "coordinates": coordinates}
        copies = kp_cfg.pop("copies")
        with phase("augment"):
            images, points = expand_keypoint_training_set(train["images"], train["keypoints"], copies, seed, **kp_cfg)
        with phase("save"):
            artifacts.save_split(artifacts.AUGMENTED_KEYPOINTS_TRAIN, images=images, keypoints=points)

        reports = REPORTS_DIR / "augment"
        rng = np.random.default_rng(seed)
        originals, original_points = train["images"][:PREVIEW_FACES], train["keypoints"][:PREVIEW_FACES]
        with phase("pictures"):  # the previews: their augmentations are drawn here too
            moved, moved_points = augment_keypoint_faces(originals, original_points, rng, **kp_cfg)
            pictures.face_grid(
                reports / "keypoints_preview.png",
                np.concatenate([originals, moved]),
                keypoints=np.concatenate([original_points, moved_points]),
                columns=PREVIEW_FACES,
                suptitle="top: prepared faces; bottom: augmented copies (keypoints moved with the pixels)",
            )

        with phase("load"):
            faces = artifacts.load_split(files["emotion_train"])["images"][:PREVIEW_FACES]
        with phase("pictures"):
            layers = emotion_augmenter(seed=seed, **cfg["emotion"])
            batch = faces[..., None].astype(np.float32)
            rows = [faces] + [np.asarray(layers(batch, training=True))[..., 0] for _ in range(3)]
            pictures.face_grid(
                reports / "emotion_preview.png",
                np.clip(np.concatenate(rows), 0, 255).astype(np.uint8),
                columns=PREVIEW_FACES,
                suptitle="top: prepared faces; below: on-the-fly augmentations",
            )

        summary = {"keypoints_train_faces": int(len(train["images"])), "keypoints_augmented_faces": int(len(images))}
        with phase("log"):
            store.log_metrics(summary)
            store.log_artifacts(reports / "keypoints_preview.png", reports / "emotion_preview.png", folder="augment")
    return summary
