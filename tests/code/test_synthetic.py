"""The synthetic face generator: seeded, in range, keypoints on the drawn features, expressions
that show, and CSV writers that speak the real Kaggle and fer2013.csv layouts."""

import gzip

import numpy as np
import pandas as pd
import pytest

from facelab.data import synthetic
from facelab.formats import FER_LABELS, KEYPOINT_COLUMNS, KEYPOINT_IMAGE_COLUMN, KEYPOINT_NAMES

KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
HAPPY, SAD, ANGRY, SURPRISE, NEUTRAL = (FER_LABELS.index(c) for c in ("happy", "sad", "angry", "surprise", "neutral"))


def _points(keypoints: np.ndarray, name: str) -> np.ndarray:
    """(n, 2) x, y of one keypoint."""
    return keypoints.reshape(len(keypoints), -1, 2)[:, KP[name]]


def _mean_y(keypoints: np.ndarray, *names: str) -> np.ndarray:
    """(n,) mean y of some keypoints."""
    return np.mean([_points(keypoints, name)[:, 1] for name in names], 0)


def _clean_faces(
    labels,
    seed: int,
    size: int = 96,
    intensity: float | None = 1.0,
    upright: bool = False,
    same_identity: bool = False,
    **overrides,
):
    """Faces drawn without lighting, contrast, blur or noise; returns images, keypoints, params."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    n = len(labels)
    strength = rng.uniform(*synthetic.EMOTION_INTENSITY, n) if intensity is None else np.full(n, intensity)
    params = synthetic._sample_params(rng, labels, strength)
    if same_identity:
        per_face = set(synthetic.EXPRESSION_PARAMS) | {"teeth", "label"}
        params = {k: (v if k in per_face else np.repeat(v[:1], n)) for k, v in params.items()}
    if upright:
        params["rot"] = np.zeros(n)
    for key, value in overrides.items():
        params[key] = np.full(n, value, dtype=params[key].dtype)
    images, keypoints = synthetic._render(params, size, np.random.default_rng(seed + 1), clean=True)
    return images, keypoints, params


def _bilinear(image: np.ndarray, x: float, y: float) -> float:
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    a = image[y0 : y0 + 2, x0 : x0 + 2].astype(float)
    return float(np.array([1 - fy, fy]) @ a @ np.array([1 - fx, fx]))


# --- determinism, shapes, ranges -------------------------------------------------------------


def test_same_seed_gives_identical_arrays_and_other_seeds_differ():
    images, keypoints = synthetic.make_keypoint_faces(12, seed=3)
    again_images, again_keypoints = synthetic.make_keypoint_faces(12, seed=3)
    assert np.array_equal(images, again_images) and np.array_equal(keypoints, again_keypoints)
    other_images, other_keypoints = synthetic.make_keypoint_faces(12, seed=4)
    assert not np.array_equal(images, other_images) and not np.allclose(keypoints, other_keypoints)

    faces, labels = synthetic.make_emotion_faces(30, seed=3)
    again_faces, again_labels = synthetic.make_emotion_faces(30, seed=3)
    assert np.array_equal(faces, again_faces) and np.array_equal(labels, again_labels)
    other_faces, other_labels = synthetic.make_emotion_faces(30, seed=4)
    assert not np.array_equal(faces, other_faces) and not np.array_equal(labels, other_labels)


def test_keypoint_faces_shapes_dtypes_and_ranges():
    images, keypoints = synthetic.make_keypoint_faces(40, seed=0)
    assert images.shape == (40, 96, 96) and images.dtype == np.uint8
    assert keypoints.shape == (40, 30) and keypoints.dtype == np.float32
    assert np.isfinite(keypoints).all()
    assert keypoints.min() >= 0.0 and keypoints.max() <= 95.0  # every keypoint inside the frame
    assert images.std() > 20 and images.min() < 40 and images.max() > 200  # real contrast, not a flat field
    assert len({images[i].tobytes() for i in range(len(images))}) == 40


def test_emotion_faces_shapes_dtypes_ranges_and_size():
    images, labels = synthetic.make_emotion_faces(25, seed=1)
    assert images.shape == (25, 48, 48) and images.dtype == np.uint8
    assert labels.shape == (25,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(FER_LABELS)
    big, big_labels = synthetic.make_emotion_faces(5, seed=1, size=64)
    assert big.shape == (5, 64, 64) and big_labels.dtype == np.int64
    empty, empty_labels = synthetic.make_emotion_faces(0, seed=1)
    assert empty.shape == (0, 48, 48) and empty_labels.shape == (0,)


def test_every_class_present_with_fer_like_frequencies():
    _, labels = synthetic.make_emotion_faces(500, seed=7)
    counts = np.bincount(labels, minlength=len(FER_LABELS))
    assert (counts > 0).all()
    assert counts[FER_LABELS.index("disgust")] >= 0.05 * 500
    assert counts.argmax() == HAPPY  # as in FER2013
    assert abs(counts[NEUTRAL] / 500 - 4965 / 28709) < 0.03
    _, few = synthetic.make_emotion_faces(20, seed=7)
    assert len(np.unique(few)) == len(FER_LABELS)  # even a tiny set has every class


# --- keypoint geometry ------------------------------------------------------------------------


def test_left_is_the_persons_left_on_the_image_right():
    _, keypoints = synthetic.make_keypoint_faces(60, seed=2)
    x = lambda name: _points(keypoints, name)[:, 0]  # noqa: E731
    assert (x("left_eye_center") > x("right_eye_center")).all()
    assert (x("left_eye_outer_corner") > x("left_eye_center")).all()
    assert (x("left_eye_center") > x("left_eye_inner_corner")).all()
    assert (x("right_eye_inner_corner") > x("right_eye_center")).all()
    assert (x("right_eye_center") > x("right_eye_outer_corner")).all()
    assert (x("left_eyebrow_outer_end") > x("left_eyebrow_inner_end")).all()
    assert (x("right_eyebrow_inner_end") > x("right_eyebrow_outer_end")).all()
    assert (x("mouth_left_corner") > x("mouth_right_corner")).all()
    # the Kaggle layout, roughly: eyes at x ~ 66 / 30, y ~ 38; mouth at y ~ 76
    assert abs(x("left_eye_center").mean() - 66) < 5 and abs(x("right_eye_center").mean() - 30) < 5
    assert abs(_points(keypoints, "left_eye_center")[:, 1].mean() - 38) < 5
    assert abs(_points(keypoints, "mouth_left_corner")[:, 1].mean() - 76) < 5


def test_keypoints_vary_with_expression_and_pose():
    _, keypoints = synthetic.make_keypoint_faces(60, seed=5)
    spread = keypoints.std(0)
    assert (spread > 1.0).all()  # no constant layout
    mouth_height = _mean_y(keypoints, "mouth_center_bottom_lip") - _mean_y(keypoints, "mouth_center_top_lip")
    assert mouth_height.std() > 0.8


def test_pupil_sits_on_the_eye_centre_keypoint():
    # unambiguous tones: black pupil, mid-grey iris, lids and brows lighter than the pupil threshold
    images, keypoints, _ = _clean_faces(
        np.full(20, NEUTRAL), seed=11, intensity=0.0, pupil_c=0.0, iris_c=120.0, skin=250.0, brow=100.0, sclera=230.0
    )
    for i in range(20):
        for name in ("left_eye_center", "right_eye_center"):
            x, y = _points(keypoints[i : i + 1], name)[0]
            cx, cy = int(round(x)), int(round(y))
            window = images[i, cy - 3 : cy + 4, cx - 3 : cx + 4].astype(float)
            weight = np.clip(60.0 - window, 0.0, None)
            ys, xs = np.mgrid[cy - 3 : cy + 4, cx - 3 : cx + 4]
            assert weight.sum() > 0, "no pupil near the eye centre"
            centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
            assert np.abs(centroid - (x, y)).max() < 0.6, (i, name, centroid, (x, y))


@pytest.mark.parametrize("size", [96, 48])
def test_keypoints_lie_on_the_drawn_features(size):
    labels = np.arange(40) % len(FER_LABELS)
    images, keypoints, params = _clean_faces(labels, seed=12, size=size, intensity=None)
    skin = params["skin"]
    for i in range(len(labels)):
        points = keypoints[i].reshape(-1, 2)
        for name in KEYPOINT_NAMES:
            value = _bilinear(images[i], *points[KP[name]])
            if name == "nose_tip":  # the bright tip between dark nostrils
                x, y = np.rint(points[KP[name]]).astype(int)
                around = images[i, y - 3 : y + 4, x - 4 : x + 5].astype(float)
                assert around.min() < skin[i] - 30, (i, name)
                continue
            if name.startswith("mouth_center") and size < 96:  # sub-pixel lip edges: see the next test
                continue
            # eyes, eye corners, brow ends, mouth corners and lip edges are darker than the skin
            limit = 8.0 if name.startswith("mouth_center") or size < 96 else 15.0
            assert value < skin[i] - limit, (i, name, value, skin[i])


def test_lip_keypoints_are_the_outer_lip_edges():
    images, keypoints, params = _clean_faces(np.full(30, NEUTRAL), seed=13, intensity=0.0, upright=True)
    for i in range(30):
        skin = params["skin"][i]
        top = _points(keypoints[i : i + 1], "mouth_center_top_lip")[0]
        bottom = _points(keypoints[i : i + 1], "mouth_center_bottom_lip")[0]
        assert bottom[1] > top[1] + 2
        # outside the lips: skin; just inside: lip
        assert abs(_bilinear(images[i], top[0], top[1] - 1.5) - skin) < 12
        assert abs(_bilinear(images[i], bottom[0], bottom[1] + 1.5) - skin) < 12
        assert _bilinear(images[i], top[0], top[1] + 1.0) < skin - 15
        assert _bilinear(images[i], bottom[0], bottom[1] - 1.0) < skin - 15


# --- expressions ------------------------------------------------------------------------------


def test_expressions_change_the_mouth_of_the_same_face():
    images, keypoints, params = _clean_faces([HAPPY, SAD, NEUTRAL, SURPRISE], seed=21, same_identity=True, upright=True)
    left, right = _points(keypoints, "mouth_left_corner"), _points(keypoints, "mouth_right_corner")
    top, bottom = _points(keypoints, "mouth_center_top_lip"), _points(keypoints, "mouth_center_bottom_lip")
    x0, x1 = int(right[:, 0].min()) - 3, int(left[:, 0].max()) + 4
    y0, y1 = int(min(top[:, 1].min(), left[:, 1].min())) - 3, int(max(bottom[:, 1].max(), left[:, 1].max())) + 4
    mouth = images[:, y0:y1, x0:x1].astype(float)
    contrast = 0.06 * params["skin"][0]  # darker skin, darker lips: less contrast
    assert np.abs(mouth[0] - mouth[1]).mean() > contrast  # happy vs sad
    assert np.abs(mouth[3] - mouth[2]).mean() > contrast  # surprise vs neutral
    # away from the face features (top corners: background) nothing changes
    assert np.array_equal(images[0, :8, :8], images[1, :8, :8])


def test_expression_geometry_on_average():
    n = 150
    labels = np.repeat([HAPPY, SAD, ANGRY, SURPRISE, NEUTRAL], n)
    _, keypoints, _ = _clean_faces(labels, seed=22, intensity=None, upright=True)
    by_class = lambda *names: _mean_y(keypoints, *names).reshape(5, n)  # noqa: E731  rows: the classes above
    corners = by_class("mouth_left_corner", "mouth_right_corner")
    lips = by_class("mouth_center_top_lip", "mouth_center_bottom_lip")
    curve = corners - lips  # < 0: corners up (smile), > 0: corners down (frown)
    assert (curve[0] < 0).mean() > 0.9 and (curve[1] > 0).mean() > 0.9
    opening = by_class("mouth_center_bottom_lip") - by_class("mouth_center_top_lip")
    assert opening[3].mean() > opening[4].mean() + 3  # surprise: open mouth
    inner = by_class("left_eyebrow_inner_end", "right_eyebrow_inner_end")
    outer = by_class("left_eyebrow_outer_end", "right_eyebrow_outer_end")
    slant = inner - outer  # > 0: inner ends lower (angry V), < 0: raised (sad)
    assert slant[2].mean() > slant[4].mean() + 2 > slant[1].mean() + 4
    brow_lift = by_class("left_eye_center", "right_eye_center") - inner
    assert brow_lift[3].mean() > brow_lift[4].mean() + 2  # surprise: raised brows
    # but classes overlap: some sad faces frown less than some neutral ones
    assert curve[1].min() < curve[4].max()


# --- CSV writers ------------------------------------------------------------------------------


def test_keypoints_csv_round_trips(tmp_path):
    path = tmp_path / "raw" / "training.csv"
    synthetic.write_synthetic_keypoints_csv(path, 6, seed=9)
    images, keypoints = synthetic.make_keypoint_faces(6, seed=9)
    table = pd.read_csv(path)
    assert list(table.columns) == list(KEYPOINT_COLUMNS) + [KEYPOINT_IMAGE_COLUMN]
    np.testing.assert_allclose(table[list(KEYPOINT_COLUMNS)].to_numpy(), keypoints, atol=1e-3)
    pixels = np.stack([np.array(text.split(" "), dtype=np.int64) for text in table[KEYPOINT_IMAGE_COLUMN]])
    assert pixels.shape == (6, 96 * 96)
    assert np.array_equal(pixels.reshape(6, 96, 96), images)
    first_line = path.read_text().splitlines()[1]
    assert first_line.split(",")[0] == f"{keypoints[0, 0]:.4f}"  # 4 decimals
    assert sorted(p.name for p in path.parent.iterdir()) == ["training.csv"]  # no temporary files left


def test_fer_csv_round_trips_with_usage(tmp_path):
    path = tmp_path / "fer2013.csv"
    synthetic.write_synthetic_fer_csv(path, 20, seed=9, test_fraction=0.25)
    images, labels = synthetic.make_emotion_faces(20, seed=9)
    table = pd.read_csv(path)
    assert list(table.columns) == ["emotion", "pixels", "Usage"]
    assert np.array_equal(table["emotion"].to_numpy(), labels)
    assert table["Usage"].tolist() == ["Training"] * 15 + ["PublicTest"] * 5
    pixels = np.stack([np.array(text.split(" "), dtype=np.int64) for text in table["pixels"]])
    assert pixels.shape == (20, 48 * 48)
    assert np.array_equal(pixels.reshape(20, 48, 48), images)
    assert not np.array_equal(labels, np.sort(labels))  # rows shuffled, not grouped by class


def test_gzip_output_is_reproducible_and_readable(tmp_path):
    first, second = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    synthetic.write_synthetic_fer_csv(first, 8, seed=1)
    synthetic.write_synthetic_fer_csv(second, 8, seed=1)
    assert first.read_bytes() == second.read_bytes()  # no time stamp in the gzip header
    assert gzip.decompress(first.read_bytes()).startswith(b"emotion,pixels,Usage\n")
    table = pd.read_csv(first)
    assert len(table) == 8 and (table["Usage"] == "Training").sum() == 6
    plain_a, plain_b = tmp_path / "a.csv", tmp_path / "b.csv"
    synthetic.write_synthetic_keypoints_csv(plain_a, 3, seed=2)
    synthetic.write_synthetic_keypoints_csv(plain_b, 3, seed=2)
    assert plain_a.read_bytes() == plain_b.read_bytes()


def test_bad_arguments_are_one_line_errors(tmp_path):
    from facelab.errors import FacelabError

    with pytest.raises(FacelabError, match="number of faces"):
        synthetic.make_keypoint_faces(-1, seed=0)
    with pytest.raises(FacelabError, match="test_fraction"):
        synthetic.write_synthetic_fer_csv(tmp_path / "f.csv", 4, seed=0, test_fraction=1.5)
    assert not (tmp_path / "f.csv").exists()
