"""The file formats facelab reads and writes: column names, label ids, image sizes.

Two public layouts are spoken here, and the synthetic generator writes both:

* Kaggle "Facial Keypoints Detection" ``training.csv``: 30 coordinate columns
  (15 keypoints, x then y, in Kaggle's order) and ``Image`` (9216 space-separated
  0-255 values, a 96x96 grayscale face, row-major). "left" is the person's left,
  which is on the image's right.
* FER2013 ``fer2013.csv``: ``emotion,pixels,Usage`` with 7 label ids and 48x48
  grayscale faces.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

KEYPOINT_IMAGE_SIZE = 96
EMOTION_IMAGE_SIZE = 48

KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
KEYPOINT_COLUMNS: tuple[str, ...] = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y"))
KEYPOINT_IMAGE_COLUMN = "Image"


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[len("left_") :]
    if name.startswith("right_"):
        return "left_" + name[len("right_") :]
    if name == "mouth_left_corner":
        return "mouth_right_corner"
    if name == "mouth_right_corner":
        return "mouth_left_corner"
    return name


# FLIP_PERMUTATION[i] is the keypoint that keypoint i becomes after a horizontal flip.
FLIP_PERMUTATION: tuple[int, ...] = tuple(KEYPOINT_NAMES.index(_mirror_name(n)) for n in KEYPOINT_NAMES)

# Where a keypoint file's coordinates put the pixels (``data.keypoints.coordinates``): "centres", pixel i at
# x = i, or "edges", pixel i spanning [i, i + 1) (coordinates scaled with a resized crop are).
KEYPOINT_COORDINATES = ("centres", "edges")


def mirror_axis(width: int, coordinates: str = "centres") -> float:
    """``a`` of the horizontal mirror x -> a - x of an image ``width`` pixels wide: width - 1 for pixel
    centres on whole numbers, width for pixel edges on them."""
    if coordinates not in KEYPOINT_COORDINATES:
        raise ValueError(f"coordinates must be one of {KEYPOINT_COORDINATES}, got {coordinates!r}")
    return float(width - 1 if coordinates == "centres" else width)


# FER2013 label ids, as in fer2013.csv.
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_COLUMNS = ("emotion", "pixels", "Usage")
FER_USAGE_TRAIN, FER_USAGE_VAL, FER_USAGE_TEST = "Training", "PublicTest", "PrivateTest"

# Every name a user may give a class (in params.yaml or as an image-folder name) -> FER label id.
EMOTION_ALIASES: dict[str, int] = {
    "angry": 0,
    "anger": 0,
    "disgust": 1,
    "disgusted": 1,
    "fear": 2,
    "fearful": 2,
    "scared": 2,
    "happy": 3,
    "happiness": 3,
    "sad": 4,
    "sadness": 4,
    "surprise": 5,
    "surprised": 5,
    "neutral": 6,
}

DEFAULT_EMOTION_CLASSES: tuple[str, ...] = ("anger", "disgust", "sadness", "happiness", "surprise")


def fer_label_id(class_name: str) -> int:
    """FER2013 label id of a class name such as ``"anger"`` or ``"happy"``; KeyError if unknown."""
    key = class_name.strip().lower()
    if key not in EMOTION_ALIASES:
        known = ", ".join(sorted(EMOTION_ALIASES))
        raise KeyError(f"unknown emotion class {class_name!r} (known: {known})")
    return EMOTION_ALIASES[key]
