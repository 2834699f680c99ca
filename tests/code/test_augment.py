"""Keypoint augmentation moves keypoints with the pixels and swaps left/right on a flip."""

import numpy as np
import pytest

from facelab.data.augmentation import augment_keypoint_faces, flip_images, flip_keypoints
from facelab.formats import FLIP_PERMUTATION, KEYPOINT_NAMES


def _dot_faces(points: np.ndarray, size: int = 96) -> np.ndarray:
    """One image per face: a bright 3x3 dot at each keypoint, dark elsewhere."""
    images = np.zeros((len(points), size, size), np.uint8)
    for i, face in enumerate(points.reshape(len(points), -1, 2)):
        for x, y in np.round(face).astype(int):
            images[i, y - 1 : y + 2, x - 1 : x + 2] = 255
    return images


def test_flip_permutation_swaps_every_left_right_pair():
    for i, name in enumerate(KEYPOINT_NAMES):
        partner = KEYPOINT_NAMES[FLIP_PERMUTATION[i]]
        if "left" in name:
            assert partner == name.replace("left", "right")
        elif "right" in name:
            assert partner == name.replace("right", "left")
        else:
            assert partner == name
    assert sorted(FLIP_PERMUTATION) == list(range(15))


def test_flip_mirrors_x_and_swaps_names():
    points = np.zeros((1, 30), np.float32)
    left_eye, right_eye = KEYPOINT_NAMES.index("left_eye_center"), KEYPOINT_NAMES.index("right_eye_center")
    points[0, 2 * left_eye : 2 * left_eye + 2] = (66, 40)
    points[0, 2 * right_eye : 2 * right_eye + 2] = (30, 38)
    flipped = flip_keypoints(points, 96)
    # the person's left eye of the flipped face is where the right eye was, mirrored
    assert tuple(flipped[0, 2 * left_eye : 2 * left_eye + 2]) == (95 - 30, 38)
    assert tuple(flipped[0, 2 * right_eye : 2 * right_eye + 2]) == (95 - 66, 40)
    np.testing.assert_allclose(flip_keypoints(flipped, 96), points)


def test_flipped_keypoints_still_sit_on_the_flipped_pixels():
    rng = np.random.default_rng(0)
    points = rng.uniform(10, 85, size=(3, 30)).astype(np.float32)
    images = _dot_faces(points)
    flipped_images, flipped_points = flip_images(images), flip_keypoints(points, 96)
    for image, face in zip(flipped_images, flipped_points.reshape(3, -1, 2)):
        for x, y in np.round(face).astype(int):
            assert image[y, x] == 255


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rotation_and_shift_move_keypoints_with_the_pixels(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(25, 70, size=(4, 30)).astype(np.float32)
    images = _dot_faces(points)
    out_images, out_points = augment_keypoint_faces(
        images, points, rng, flip=True, rotation_deg=15, shift_px=5, scale=0.1, brightness=0.0
    )
    assert not np.allclose(out_points, points)
    for image, face in zip(out_images, out_points.reshape(4, -1, 2)):
        for x, y in np.round(face).astype(int):
            assert image[y - 1 : y + 2, x - 1 : x + 2].max() > 100, "a moved keypoint left its dot"


def test_brightness_keeps_keypoints_and_changes_pixels():
    rng = np.random.default_rng(0)
    points = rng.uniform(25, 70, size=(2, 30)).astype(np.float32)
    images = np.full((2, 96, 96), 120, np.uint8)
    out_images, out_points = augment_keypoint_faces(
        images, points, rng, flip=False, rotation_deg=0, shift_px=0, scale=0, brightness=0.5
    )
    np.testing.assert_array_equal(out_points, points)
    assert not np.array_equal(out_images, images)


def test_missing_keypoints_stay_missing():
    rng = np.random.default_rng(0)
    points = rng.uniform(25, 70, size=(2, 30)).astype(np.float32)
    points[0, 4:8] = np.nan
    _, out_points = augment_keypoint_faces(
        np.zeros((2, 96, 96), np.uint8), points, rng, flip=True, rotation_deg=10, shift_px=3, scale=0.05, brightness=0.1
    )
    assert np.isnan(out_points).sum() == 4


def test_edge_coordinates_mirror_about_the_middle_of_the_image():
    """Pixel i spans [i, i + 1): the image's middle is x = 48 and the mirror maps x to 96 - x."""
    points = np.full((1, 30), 20.0, np.float32)
    assert flip_keypoints(points, 96, "edges").reshape(-1, 2)[0, 0] == 76.0
    assert flip_keypoints(points, 96).reshape(-1, 2)[0, 0] == 75.0
    np.testing.assert_allclose(flip_keypoints(flip_keypoints(points, 96, "edges"), 96, "edges"), points)


@pytest.mark.parametrize("seed", [1, 2])
def test_edge_coordinates_move_with_the_pixels_as_centre_ones_do(seed):
    """The same faces with their keypoints written as pixel edges (x + 0.5): every flip, rotation, shift and
    scaling moves them to where the pixel-centre keypoints go, + 0.5."""
    points = np.random.default_rng(0).uniform(25, 70, size=(4, 30)).astype(np.float32)
    images = _dot_faces(points)
    settings = dict(flip=True, rotation_deg=15, shift_px=5, scale=0.1, brightness=0.0)
    centre_images, centres = augment_keypoint_faces(images, points, np.random.default_rng(seed), **settings)
    edge_images, edges = augment_keypoint_faces(
        images, points + 0.5, np.random.default_rng(seed), coordinates="edges", **settings
    )
    np.testing.assert_array_equal(edge_images, centre_images)
    np.testing.assert_allclose(edges, centres + 0.5, atol=1e-4)
