"""The augmentation library: geometric and photometric changes that keep labels true (the
``pipeline.augment`` stage, the emotion training and test-time averaging use it).

Keypoints (numpy + OpenCV, run once by the ``augment`` stage module): a horizontal flip mirrors
every x coordinate about the axis of the file's coordinates (formats.mirror_axis: 95 - x for pixel
centres on whole numbers, 96 - x for pixel edges) and swaps each left/right keypoint pair
(formats.FLIP_PERMUTATION); rotations, shifts and scalings are one affine warp applied to the pixels
and to the keypoints alike (in OpenCV's pixel-centre frame); brightness/contrast changes leave
keypoints where they are.

Emotion (Keras preprocessing layers, applied on the fly by ``tf.data`` while training):
random flip, rotation, translation, zoom, contrast and random erasing (a rectangle of noise over
part of the face, so no single region decides the label). ``emotion_augmenter`` builds them.
``emotion_mixer`` adds mixup: each face and its label blended with another face of the batch.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.formats import FLIP_PERMUTATION, mirror_axis


def flip_keypoints(keypoints: np.ndarray, width: int, coordinates: str = "centres") -> np.ndarray:
    """Keypoints (N, 30) of horizontally flipped images: x -> width-1-x (pixel centres on whole numbers) or
    width-x (``coordinates="edges"``), left/right swapped."""
    pts = keypoints.reshape(len(keypoints), -1, 2).copy()
    pts[..., 0] = mirror_axis(width, coordinates) - pts[..., 0]
    return pts[:, list(FLIP_PERMUTATION), :].reshape(keypoints.shape)


def flip_images(images: np.ndarray) -> np.ndarray:
    """Images (N, H, W) mirrored left-right."""
    return images[:, :, ::-1]


def _affine(rng: np.random.Generator, size: int, rotation_deg: float, shift_px: float, scale: float) -> np.ndarray:
    angle = rng.uniform(-rotation_deg, rotation_deg)
    zoom = 1.0 + rng.uniform(-scale, scale)
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, zoom)
    matrix[:, 2] += rng.uniform(-shift_px, shift_px, size=2)
    return matrix


def augment_keypoint_faces(
    images: np.ndarray,
    keypoints: np.ndarray,
    rng: np.random.Generator,
    *,
    flip: bool,
    rotation_deg: float,
    shift_px: float,
    scale: float,
    brightness: float,
    coordinates: str = "centres",
) -> tuple[np.ndarray, np.ndarray]:
    """One random augmented copy of each face, keypoints moved with the pixels (``coordinates``: where the
    keypoints put the pixels, ``formats.KEYPOINT_COORDINATES``).

    Copies whose moved keypoints would leave the frame keep their original geometry.
    """
    n, size, _ = images.shape
    out_images = np.empty_like(images)
    out_points = keypoints.astype(np.float32, copy=True)
    do_flip = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    to_centres = 0.0 if coordinates == "centres" else 0.5  # the warp's matrix is in OpenCV's pixel-centre frame
    for i in range(n):
        image, points = images[i], keypoints[i].reshape(-1, 2)
        if do_flip[i]:
            image = image[:, ::-1]
            points = flip_keypoints(keypoints[i : i + 1], size, coordinates)[0].reshape(-1, 2)
        if rotation_deg or shift_px or scale:
            matrix = _affine(rng, size, rotation_deg, shift_px, scale)
            moved = (points - to_centres) @ matrix[:, :2].T + matrix[:, 2] + to_centres
            if np.all((moved >= 0) & (moved <= size - 1) | np.isnan(moved)):
                image = cv2.warpAffine(
                    np.ascontiguousarray(image),
                    matrix,
                    (size, size),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                points = moved
        if brightness:
            gain = 1.0 + rng.uniform(-brightness, brightness)
            bias = rng.uniform(-brightness, brightness) * 64.0
            image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        out_images[i] = image
        out_points[i] = np.asarray(points, np.float32).reshape(-1)
    return out_images, out_points


def expand_keypoint_training_set(
    images: np.ndarray, keypoints: np.ndarray, copies: int, seed: int, **settings
) -> tuple[np.ndarray, np.ndarray]:
    """The original faces followed by ``copies`` augmented copies of each."""
    rng = np.random.default_rng(seed)
    all_images, all_points = [images], [keypoints.astype(np.float32)]
    for _ in range(copies):
        aug_images, aug_points = augment_keypoint_faces(images, keypoints, rng, **settings)
        all_images.append(aug_images)
        all_points.append(aug_points)
    return np.concatenate(all_images), np.concatenate(all_points)


ERASED_AREA = (0.02, 0.25)  # random erasing: the fraction of the face one erased rectangle covers


def emotion_augmenter(
    flip: bool, rotation: float, shift: float, zoom: float, contrast: float, seed: int, erasing: float = 0.0
):
    """Keras preprocessing layers that augment a batch of (H, W, 1) 0-255 images on the fly.

    ``erasing``: covers a rectangle of each face with noise with a probability drawn, per face,
    between 0 and this (Keras ``RandomErasing``), so on average half of it; 0 turns it off.
    """
    import keras  # local: the numpy half of this module must not need TensorFlow
    from keras import layers

    steps = []
    if flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if rotation:
        steps.append(layers.RandomRotation(rotation, fill_mode="nearest", seed=seed + 1))
    if shift:
        steps.append(layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed + 2))
    if zoom:
        steps.append(layers.RandomZoom(zoom, fill_mode="nearest", seed=seed + 3))
    if contrast:
        steps.append(layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 4))
    if erasing:
        steps.append(layers.RandomErasing(erasing, scale=ERASED_AREA, value_range=(0, 255), seed=seed + 5))
    return keras.Sequential(steps, name="emotion_augmentation")


def emotion_mixer(alpha: float, seed: int):
    """Mixup (Keras ``MixUp``): ``(images, one-hot labels) -> (images, labels)`` of a batch, each face
    and its label blended with another face of the batch, the weights drawn from Beta(alpha, alpha).
    ``None`` when ``alpha`` is 0 (off)."""
    if not alpha:
        return None
    from keras import layers  # local, as in emotion_augmenter

    # float32 whatever the global precision: under mixed_bfloat16 the layer would blend bf16 labels
    # with float32 weights (a TypeError)
    layer = layers.MixUp(alpha=alpha, seed=seed + 6, dtype="float32")

    def mix(images, labels):
        mixed = layer({"images": images, "labels": labels}, training=True)
        return mixed["images"], mixed["labels"]

    return mix
