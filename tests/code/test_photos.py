"""Reading any photo, finding and cropping faces, and `facelab predict` batching faces across photos."""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facelab.config import SHARED_DATA
from facelab.errors import FacelabError
from facelab.formats import KEYPOINT_COLUMNS, KEYPOINT_IMAGE_COLUMN, KEYPOINT_NAMES
from facelab.serve import photo_batches, photos, predict_command
from tests.support.networks import TINY_EMOTION_CLASSES as CLASSES
from tests.support.photos import bomb_png

YTF_VAL = Path(__file__).resolve().parents[2] / SHARED_DATA / "keypoints" / "ytf-keypoints-val.csv.gz"


def _picture(height: int = 60, width: int = 80) -> np.ndarray:
    """A BGR picture whose top-left quadrant is bright and the rest dark: its orientation can be told."""
    image = np.full((height, width, 3), 40, np.uint8)
    image[: height // 2, : width // 2] = (200, 220, 240)
    return image


def _gray(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


# --- reading --------------------------------------------------------------------------------


def test_reads_grayscale_colour_and_rgba_pngs_and_jpegs(tmp_path):
    bgr = _picture()
    cv2.imwrite(str(tmp_path / "gray.png"), _gray(bgr))
    cv2.imwrite(str(tmp_path / "colour.png"), bgr)
    cv2.imwrite(str(tmp_path / "colour.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 98])
    for name in ("gray.png", "colour.png", "colour.jpg"):
        gray = photos.read_photo(tmp_path / name)
        assert gray.dtype == np.uint8 and gray.shape == (60, 80), name
        assert np.abs(gray.astype(int) - _gray(bgr)).max() <= 3, name

    rgba = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    rgba[:, 60:, 3] = 0  # fully transparent on the right: shown on white
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    gray = photos.read_photo(tmp_path / "rgba.png")
    assert (gray[:, 60:] == 255).all()
    assert np.array_equal(gray[:, :60], _gray(bgr)[:, :60])


def test_16_bit_pngs_are_scaled_to_8_bit(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (60, 1))
    cv2.imwrite(str(tmp_path / "gray16.png"), ramp)
    cv2.imwrite(str(tmp_path / "colour16.png"), np.dstack([ramp] * 3))
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    for name in ("gray16.png", "colour16.png"):
        gray = photos.read_photo(tmp_path / name)
        assert gray.dtype == np.uint8
        assert gray[0, 0] == 0 and gray[0, -1] == 255
        assert np.abs(gray.astype(int) - expected).max() <= 1, name


def test_large_jpeg(tmp_path):
    big = cv2.resize(_picture(), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    gray = photos.read_photo(tmp_path / "big.jpg")
    assert gray.shape == (3000, 4000)
    assert gray[10, 10] > 150 and gray[-10, -10] < 80


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_opencv_and_viewers_do(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[photos.EXIF_ORIENTATION] = orientation
    Image.fromarray(_picture()[..., ::-1]).save(path, exif=exif.tobytes(), quality=98)
    gray = photos.read_photo(path)
    reference = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # OpenCV applies EXIF orientation here
    assert gray.shape == reference.shape == ((60, 80) if orientation <= 4 else (80, 60))
    assert np.abs(gray.astype(int) - reference).mean() < 2
    if orientation == 6:  # "rotate 90 clockwise to display": the bright top-left goes to the top-right
        assert gray[5, -5] > 150 and gray[5, 5] < 80


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    noisy = np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)  # cut in the pixel data
    ok, jpeg = cv2.imencode(".jpg", noisy)
    ok, png = cv2.imencode(".png", noisy)
    jpeg_bomb = bytearray(jpeg.tobytes())
    sof = jpeg_bomb.find(b"\xff\xc0")
    jpeg_bomb[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)
    cases = {
        "empty": (b"", "empty file"),
        "truncated_jpeg": (jpeg.tobytes()[: len(jpeg) // 2], "truncated JPEG"),
        "truncated_png": (png.tobytes()[: len(png) // 2], "truncated PNG"),
        "header_only_jpeg": (jpeg.tobytes()[:40], "truncated or corrupt JPEG"),
        "text": (b"name,value\nthis is, not an image\n" * 20, "not an image"),
        "gzip": (gzip.compress(b"not an image"), "not an image"),
        "png_bomb": (bomb_png(12000, 10000), "image too large: 12000x10000 = 120.0 megapixels (limit 100)"),
        "jpeg_bomb": (bytes(jpeg_bomb), "image too large: 900.0 megapixels (limit 100)"),
    }
    files = {}
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        files[name] = (path, message)
    return files


@pytest.mark.parametrize(
    "case", ["empty", "truncated_jpeg", "truncated_png", "header_only_jpeg", "text", "gzip", "png_bomb", "jpeg_bomb"]
)
def test_bad_files_give_a_one_line_error_naming_the_file(tmp_path, case):
    path, message = _bad_files(tmp_path)[case]
    with pytest.raises(FacelabError) as caught:
        photos.read_photo(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ") and message in text, text


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FacelabError, match="no such file"):
        photos.read_photo(tmp_path / "nowhere.jpg")
    with pytest.raises(FacelabError, match="is a directory"):
        photos.read_photo(tmp_path)


# --- cropping -------------------------------------------------------------------------------


def test_crop_is_the_photo_region_and_maps_back_exactly_at_scale_1():
    photo = np.random.default_rng(0).integers(0, 256, (300, 400), np.uint8)
    box = (150, 80, 90, 90)
    left, top, side = photos.crop_region(box, margin=0.0, shift_y=0.0)
    assert (left, top, side) == (150, 80, 90)
    crop, to_photo = photos.crop_face(photo, box, 90, margin=0.0, shift_y=0.0)
    assert np.array_equal(crop, photo[80:170, 150:240])
    points = np.array([[0.0, 0.0], [10.5, 20.25], [89.0, 45.0]])
    assert np.allclose(photos.to_photo_points(points, to_photo), points + [150, 80], atol=1e-12)


def test_crop_maps_back_exactly_when_shrinking():
    photo = np.zeros((400, 400), np.uint8)
    box = (100, 60, 192, 192)  # side 192 -> 96: each crop pixel is a 2x2 block of photo pixels
    photo[60 + 2 * 30 : 60 + 2 * 30 + 2, 100 + 2 * 70 : 100 + 2 * 70 + 2] = 200  # the block under crop pixel (70, 30)
    crop, to_photo = photos.crop_face(photo, box, 96, margin=0.0, shift_y=0.0)
    assert crop[30, 70] == 200 and crop.sum() == 200
    # The crop pixel's centre is the centre of its 2x2 block in the photo.
    assert np.allclose(photos.to_photo_points([[70, 30]], to_photo), [[100 + 140.5, 60 + 60.5]], atol=1e-12)
    # The margin and shift move and grow the square around the box as documented.
    left, top, side = photos.crop_region(box)
    assert side == round(192 * (1 + 2 * photos.CROP_MARGIN))
    assert left + side / 2 == pytest.approx(100 + 96, abs=0.5)
    assert top + side / 2 == pytest.approx(60 + 96 + photos.CROP_SHIFT_Y * 192, abs=0.5)


def test_crop_near_the_border_is_padded_by_edge_replication():
    photo = np.tile(np.arange(100, dtype=np.uint8), (100, 1))  # value = x
    crop, to_photo = photos.crop_face(photo, (-20, 30, 60, 60), 60, margin=0.0, shift_y=0.0)
    assert crop.shape == (60, 60)
    assert (crop[:, :20] == 0).all()  # left of the photo: its first column repeated
    assert np.array_equal(crop[0, 20:], np.arange(40))
    assert np.allclose(photos.to_photo_points([[0, 0]], to_photo), [[-20, 30]])


# --- real faces -----------------------------------------------------------------------------


def _ytf_faces(count: int) -> tuple[np.ndarray, np.ndarray]:
    if not YTF_VAL.exists():
        pytest.skip(f"real data not found at {YTF_VAL}")
    frame = pd.read_csv(YTF_VAL, nrows=count)
    faces = np.stack([np.array(s.split(), np.uint8).reshape(96, 96) for s in frame[KEYPOINT_IMAGE_COLUMN]])
    return faces, frame[list(KEYPOINT_COLUMNS)].to_numpy(np.float64).reshape(count, -1, 2)


def _paste(face: np.ndarray, size: int, at: tuple[int, int], canvas=(600, 800), seed: int = 0) -> np.ndarray:
    """A "photo": the face upscaled to ``size`` pixels, pasted at ``at`` (x, y) into a blurred noise background."""
    rng = np.random.default_rng(seed)
    photo = cv2.GaussianBlur(rng.integers(60, 200, canvas).astype(np.uint8), (0, 0), 8)
    x, y = at
    photo[y : y + size, x : x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    return photo


@pytest.mark.realdata
def test_real_faces_are_found_and_cropped_like_the_training_faces():
    faces, points = _ytf_faces(300)
    training = points.mean(0)  # where the training crops have each keypoint, on average
    in_crop = []
    for index, (face, face_points) in enumerate(zip(faces[:12], points[:12])):
        size, at = 200 + 10 * index, (30 + 25 * index, 20 + 15 * index)
        photo = _paste(face, size, at, seed=index)
        boxes = photos.detect_faces(photo)
        assert boxes, f"face {index} not found"
        x, y, w, h = boxes[0]
        assert at[0] < x + w / 2 < at[0] + size and at[1] < y + h / 2 < at[1] + size  # on the pasted face
        assert 0.6 * size < w < 1.1 * size
        crop, to_photo = photos.crop_face(photo, boxes[0], 96)
        scale = size / 96
        true_in_photo = np.array(at) + (face_points + 0.5) * scale - 0.5
        in_crop.append((true_in_photo - to_photo[:, 2]) / to_photo[0, 0])
    in_crop = np.array(in_crop)
    # The eyes land where the training crops have them (YTF: ~(32, 32.6) and ~(64, 32.6)), the face as big.
    for eye in (0, 1):
        assert np.abs(in_crop[:, eye].mean(0) - training[eye]).max() < 3.0, KEYPOINT_NAMES[eye]
        assert np.abs(in_crop[:, eye] - training[eye]).max() < 12.0, KEYPOINT_NAMES[eye]
    iod_crop, iod_train = (in_crop[:, 0, 0] - in_crop[:, 1, 0]).mean(), training[0, 0] - training[1, 0]
    assert abs(iod_crop - iod_train) < 3.0


def test_detection_reports_largest_face_first(monkeypatch):
    boxes = np.array([[10, 10, 40, 40], [100, 50, 90, 90], [300, 20, 60, 60]])

    class Cascade:
        def detectMultiScale(self, *args, **kwargs):
            return boxes

    monkeypatch.setattr(photos, "_cascade", lambda: Cascade())
    assert photos.detect_faces(np.zeros((200, 400), np.uint8)) == [
        (100, 50, 90, 90),
        (300, 20, 60, 60),
        (10, 10, 40, 40),
    ]


def test_bundled_face_cascade_loads():
    assert not photos._cascade().empty()
    assert photos.detect_faces(np.full((120, 160), 128, np.uint8)) == []


# --- batching and outputs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzer(tiny_keypoint_network, tiny_emotion_network):
    from facelab.serve.keras_runtime import FaceAnalyzer

    return FaceAnalyzer(tiny_keypoint_network, tiny_emotion_network, CLASSES)


FAKE_BOXES = {3: [(10, 10, 60, 60), (100, 20, 80, 80), (200, 40, 50, 50)], 1: [(30, 30, 70, 70)], 0: []}


def _photo_files(tmp_path: Path, faces_per_photo: list[int]) -> list[Path]:
    paths = []
    for index, count in enumerate(faces_per_photo):
        image = np.full((150, 300), 100 + count, np.uint8)  # the face count, for the fake detector
        cv2.putText(image, str(index), (5, 140), cv2.FONT_HERSHEY_SIMPLEX, 1, 255)
        path = tmp_path / "in" / f"photo{index}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


@pytest.fixture
def fake_detector(monkeypatch):
    monkeypatch.setattr(photos, "detect_faces", lambda gray: list(FAKE_BOXES[int(gray[0, 0]) - 100]))


def test_faces_of_all_photos_share_batches(tmp_path, analyzer, fake_detector, monkeypatch):
    calls, crop_records = [], []
    original = analyzer.analyse

    def spy(faces):
        calls.append(len(faces))
        crop_records.extend(original(faces))
        return crop_records[-len(faces) :]

    monkeypatch.setattr(analyzer, "analyse", spy)
    counts = [3, 1, 0, 3, 1, 3]  # 11 faces in 6 photos
    paths = _photo_files(tmp_path, counts)
    records = predict_command.analyse_photos(paths, analyzer, tmp_path / "out", batch_faces=4)
    assert calls == [4, 4, 3]  # ceil(11 / 4) model calls, not 11
    assert [len(r["faces"]) for r in records] == counts
    assert [r["photo"] for r in records] == [str(p) for p in paths]
    # Each face's keypoints are the model's, in crop pixels, mapped into the photo with its crop's map.
    faces = [(path, face) for path, record in zip(paths, records) for face in record["faces"]]
    assert len(crop_records) == len(faces) == 11
    for (path, face), in_crop in zip(faces, crop_records):
        _, to_photo = photos.crop_face(photos.read_photo(path), face["box"], 96)
        expected = photos.to_photo_points(np.array(list(in_crop["keypoints"].values())), to_photo)
        assert list(face["keypoints"]) == list(KEYPOINT_NAMES)
        assert np.allclose(list(face["keypoints"].values()), expected, atol=0.006)
        assert face["probabilities"] == in_crop["probabilities"] and face["emotion"] == in_crop["emotion"]
        assert face["emotion"] in CLASSES and math.isclose(sum(face["probabilities"].values()), 1, abs_tol=1e-3)


def test_same_records_with_one_face_per_batch(tmp_path, analyzer, fake_detector):
    paths = _photo_files(tmp_path, [3, 1])
    big = photo_batches.analyse_images([(str(p), lambda p=p: photos.read_photo(p)) for p in paths], analyzer, 64)
    small = photo_batches.analyse_images([(str(p), lambda p=p: photos.read_photo(p)) for p in paths], analyzer, 1)
    for a, b in zip(big, small):
        for fa, fb in zip(a["faces"], b["faces"]):
            assert fa["box"] == fb["box"] and fa["emotion"] == fb["emotion"]
            assert np.allclose(list(fa["probabilities"].values()), list(fb["probabilities"].values()), atol=1e-4)
            assert np.allclose(list(fa["keypoints"].values()), list(fb["keypoints"].values()), atol=0.05)


def test_outputs_and_bad_photos(tmp_path, analyzer, fake_detector, capsys):
    paths = _photo_files(tmp_path, [1, 0])
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    records = predict_command.analyse_photos([paths[0], broken, paths[1]], analyzer, tmp_path / "out")
    err = capsys.readouterr().err
    assert records[1] == {
        "photo": str(broken),
        "error": f"{broken}: truncated or corrupt JPEG image: its header cannot be read",
    }
    assert f"facelab: error: {broken}: " in err and f"{paths[1]}: no face found" in err
    out = tmp_path / "out"
    assert json.loads((out / "photo0.json").read_text()) == records[0]
    assert json.loads((out / "photo1.json").read_text())["faces"] == []
    annotated = cv2.imread(str(out / "photo0.annotated.jpg"))
    assert annotated.shape == (150, 300, 3)
    assert not (out / "broken.json").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "photo0.annotated.jpg",
        "photo0.json",
        "photo1.annotated.jpg",
        "photo1.json",
    ]  # no temporary files


def test_output_names_do_not_collide():
    outputs = predict_command.output_paths(["a/x.jpg", "b/x.png", "x.jpeg"], "out")
    assert [j.name for _, j in outputs] == ["x.json", "x-2.json", "x-3.json"]


def test_predict_command_with_local_model_files(tmp_path, analyzer, fake_detector, capsys):
    from facelab import cli

    keypoints, emotion = tmp_path / "kp.keras", tmp_path / "em.keras"
    analyzer.keypoint_model.save(keypoints)
    analyzer.emotion_model.save(emotion)
    paths = _photo_files(tmp_path, [3, 0])
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    argv = [
        "predict",
        *map(str, paths),
        "--out",
        str(tmp_path / "out"),
        "--keypoints-model",
        str(keypoints),
        "--emotion-model",
        str(emotion),
        "--classes",
        ",".join(CLASSES),
        "--params",
        str(params),
        "--json",
    ]
    assert cli.main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    assert [len(r["faces"]) for r in records] == [3, 0]
    (tmp_path / "empty.png").write_bytes(b"")
    assert cli.main(argv[:1] + [str(tmp_path / "empty.png")] + argv[3:]) == 1
    assert cli.main(argv + ["--classes", "anger,happiness"]) == 1
    assert "the emotion model has 5 outputs but 2 classes" in capsys.readouterr().err
