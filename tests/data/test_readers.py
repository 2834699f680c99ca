"""facelab.data.readers (through csv_engine and pixel_parser) on tiny files written here: round trips,
layouts, and one case per bad input."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.data import csv_engine, pixel_parser, readers
from facelab.errors import FacelabError
from facelab.formats import FER_LABELS, KEYPOINT_COLUMNS

KP = 96 * 96
FER = 48 * 48


# --- writers ------------------------------------------------------------------------------------


def pixel_text(values: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in np.ravel(values))


def fake_images(n: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8)


def fake_keypoints(n: int, seed: int = 0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).uniform(5, 90, (n, 30)), 4).astype(np.float32)


def write(path: Path, text: str | bytes, *, gz: bool = False, newline: str = "\n", bom: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    if newline != "\n":
        data = data.replace(b"\n", newline.encode())
    if bom:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def keypoint_csv(
    images: np.ndarray, keypoints: np.ndarray, *, order: list[str] | None = None, extra: bool = False
) -> str:
    columns = order or [*KEYPOINT_COLUMNS, "Image"]
    if extra:
        columns = ["id", *columns, "note"]
    lines = [",".join(columns)]
    for k, (image, coords) in enumerate(zip(images, keypoints)):
        cells = {name: ("" if np.isnan(c) else repr(float(c))) for name, c in zip(KEYPOINT_COLUMNS, coords)}
        cells.update(Image=pixel_text(image), id=str(k), note="x")
        lines.append(",".join(cells[c] for c in columns))
    return "\n".join(lines) + "\n"


def fer_csv(images: np.ndarray, labels, usage=None, *, columns=("emotion", "pixels", "Usage")) -> str:
    lines = [",".join(columns)]
    for k, (image, label) in enumerate(zip(images, labels)):
        cells = {"emotion": str(label), "pixels": pixel_text(image), "Usage": usage[k] if usage is not None else ""}
        lines.append(",".join(cells[c.strip()] for c in columns))
    return "\n".join(lines) + "\n"


def fer_lines(n: int, seed: int = 0) -> list[str]:
    images = fake_images(n, 48, seed)
    return [f"{k % 7},{pixel_text(image)},Training" for k, image in enumerate(images)]


def kp_lines(n: int, seed: int = 0) -> list[str]:
    images, coords = fake_images(n, 96, seed), fake_keypoints(n, seed)
    return [",".join(f"{c:.4f}" for c in row) + "," + pixel_text(image) for row, image in zip(coords, images)]


@pytest.fixture(params=["big-blocks", "tiny-blocks"])
def block_size(request, monkeypatch):
    """Run each round trip with the real block size and with blocks far smaller than one row."""
    if request.param == "tiny-blocks":  # also: parse plain files on two threads, however small
        monkeypatch.setattr(pixel_parser, "BLOCK_BYTES", 3000)
        monkeypatch.setattr(csv_engine, "READ_BYTES", 1000)
        monkeypatch.setattr(pixel_parser, "PARSE_THREADS", 2)
        monkeypatch.setattr(pixel_parser, "PARALLEL_MIN_BYTES", 0)
    return request.param


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_keypoints_round_trip(tmp_path, gz, block_size):
    images, coords = fake_images(7, 96), fake_keypoints(7)
    path = write(tmp_path / ("training.csv.gz" if gz else "training.csv"), keypoint_csv(images, coords), gz=gz)
    data = readers.read_keypoints_csv(path)
    assert data.images.dtype == np.uint8 and data.images.shape == (7, 96, 96)
    assert data.keypoints.dtype == np.float32 and data.keypoints.shape == (7, 30)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_allclose(data.keypoints, coords, atol=1e-4)


def test_multi_member_gzip(tmp_path, block_size):
    """Concatenated gzip members (cat a.gz b.gz, bgzip) read as one file; zero padding is fine."""
    images = fake_images(6, 48, 11)
    text = fer_csv(images, [0, 1, 2, 3, 4, 5], ["Training"] * 6).encode()
    cuts = [0, 100, 9000, 9001, len(text) // 2, len(text)]
    data = b"".join(gzip.compress(text[a:b]) for a, b in zip(cuts, cuts[1:])) + b"\0" * 64
    path = write(tmp_path / "members.csv.gz", data)
    read = readers.read_fer_csv(path)
    np.testing.assert_array_equal(read.images, images)
    assert read.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_keypoints_any_name_any_column_order_extra_columns(tmp_path, block_size):
    images, coords = fake_images(3, 96, 1), fake_keypoints(3, 1)
    order = ["Image", *reversed(KEYPOINT_COLUMNS)]
    path = write(tmp_path / "faces.data", keypoint_csv(images, coords, order=order, extra=True), gz=True)
    data = readers.read_keypoints_csv(path)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_allclose(data.keypoints, coords, atol=1e-4)


def test_missing_keypoints_are_nan(tmp_path):
    images, coords = fake_images(4, 96, 2), fake_keypoints(4, 2)
    coords[0, 4:] = np.nan  # like Kaggle: only the eye centres
    coords[2, :] = np.nan
    coords[3, 29] = np.nan
    data = readers.read_keypoints_csv(write(tmp_path / "training.csv", keypoint_csv(images, coords)))
    np.testing.assert_array_equal(np.isnan(data.keypoints), np.isnan(coords))
    np.testing.assert_allclose(data.keypoints[~np.isnan(coords)], coords[~np.isnan(coords)], atol=1e-4)


def test_keypoint_margin_is_allowed(tmp_path):
    images, coords = fake_images(2, 96, 3), fake_keypoints(2, 3)
    coords[0, 0], coords[1, 1] = -readers.KEYPOINT_MARGIN, 96 + readers.KEYPOINT_MARGIN
    data = readers.read_keypoints_csv(write(tmp_path / "k.csv", keypoint_csv(images, coords)))
    assert data.keypoints[0, 0] == -1 and data.keypoints[1, 1] == 97


@pytest.mark.parametrize("gz", [False, True])
def test_fer_round_trip(tmp_path, gz, block_size):
    images = fake_images(9, 48, 4)
    labels = [k % 7 for k in range(9)]
    usage = ["Training"] * 5 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    path = write(tmp_path / ("fer2013.csv.gz" if gz else "fer2013.csv"), fer_csv(images, labels, usage), gz=gz)
    data = readers.read_fer_csv(path)
    np.testing.assert_array_equal(data.images, images)
    assert data.labels.dtype == np.int64 and data.labels.tolist() == labels
    assert data.usage is not None and data.usage.dtype == object and data.usage.tolist() == usage


@pytest.mark.parametrize("newline,bom", [("\r\n", False), ("\n", True), ("\r\n", True)])
@pytest.mark.parametrize("gz", [False, True])
def test_crlf_and_bom_work(tmp_path, newline, bom, gz, block_size):
    images, coords = fake_images(3, 96, 5), fake_keypoints(3, 5)
    kp = write(tmp_path / "k.csv", keypoint_csv(images, coords), newline=newline, bom=bom, gz=gz)
    data = readers.read_keypoints_csv(kp)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_allclose(data.keypoints, coords, atol=1e-4)
    faces = fake_images(3, 48, 5)
    fer = write(tmp_path / "f.csv", fer_csv(faces, [1, 2, 3], ["Training"] * 3), newline=newline, bom=bom, gz=gz)
    emotion = readers.read_fer_csv(fer)
    np.testing.assert_array_equal(emotion.images, faces)
    assert emotion.labels.tolist() == [1, 2, 3] and emotion.usage.tolist() == ["Training"] * 3


def test_icml_variant_with_spaces_in_names(tmp_path):
    images = fake_images(3, 48, 6)
    text = fer_csv(
        images, [0, 3, 6], ["Training", "PublicTest", "PrivateTest"], columns=("emotion", " Usage", " pixels")
    )
    data = readers.read_fer_csv(write(tmp_path / "icml_face_data.csv", text))
    np.testing.assert_array_equal(data.images, images)
    assert data.labels.tolist() == [0, 3, 6]
    assert data.usage.tolist() == ["Training", "PublicTest", "PrivateTest"]


def test_icml_values_with_leading_spaces(tmp_path):
    images = fake_images(2, 48, 7)
    lines = ["emotion, Usage, pixels"] + [f"{k}, Training, {pixel_text(im)}" for k, im in enumerate(images)]
    data = readers.read_fer_csv(write(tmp_path / "icml.csv", "\n".join(lines) + "\n"))
    np.testing.assert_array_equal(data.images, images)
    assert data.usage.tolist() == ["Training", "Training"]


def test_fer_without_usage(tmp_path):
    images = fake_images(4, 48, 8)
    text = fer_csv(images, [4, 5, 6, 0], columns=("emotion", "pixels"))
    data = readers.read_fer_csv(write(tmp_path / "train.csv", text))
    np.testing.assert_array_equal(data.images, images)
    assert data.usage is None and data.labels.tolist() == [4, 5, 6, 0]


def test_quoted_fields_go_through_pandas(tmp_path):
    images = fake_images(3, 48, 9)
    lines = ['"emotion","pixels","Usage"'] + [f'{k},"{pixel_text(im)}","Training"' for k, im in enumerate(images)]
    data = readers.read_fer_csv(write(tmp_path / "quoted.csv", "\n".join(lines) + "\n"))
    np.testing.assert_array_equal(data.images, images)
    assert data.usage.tolist() == ["Training"] * 3


def test_blank_lines_are_skipped_but_counted(tmp_path):
    lines = fer_lines(3)
    text = "emotion,pixels,Usage\n" + lines[0] + "\n\n" + lines[1] + "\n" + "1 2 3".join([",", ",Training"]) + "\n"
    with pytest.raises(FacelabError, match=r"row 4: pixels has 3 values, expected 2304"):
        readers.read_fer_csv(write(tmp_path / "f.csv", text))
    data = readers.read_fer_csv(write(tmp_path / "g.csv", "emotion,pixels,Usage\n\n" + "\n".join(lines) + "\n\n"))
    assert len(data.labels) == 3


def test_last_line_without_newline(tmp_path, block_size):
    lines = fer_lines(3)
    data = readers.read_fer_csv(write(tmp_path / "f.csv", "emotion,pixels,Usage\n" + "\n".join(lines)))
    assert data.images.shape == (3, 48, 48)


def test_parse_pixel_strings_matches_the_naive_parse():
    rng = np.random.default_rng(10)
    strings, expected = [], []
    for k in range(60):
        values = rng.integers(0, 256, 37)
        text = " ".join(str(v) for v in values)
        if k % 5 == 1:
            text = "  " + text.replace(" ", "   ") + " "  # extra spaces
        if k % 5 == 2:
            text = "\t".join(str(v) for v in values)  # tabs: the exact (slow) path
        if k % 5 == 3:
            text = " ".join(f"{v:03d}" for v in values)  # zero-padded
        if k % 5 == 4:
            text = " ".join(f"0{v:03d}" for v in values)  # four digits, still <= 255
        strings.append(text if k % 2 else text.encode())
        expected.append(values)
    out = pixel_parser.parse_pixel_strings(strings, 37, "x.csv")
    np.testing.assert_array_equal(out, np.array(expected, np.uint8))
    naive = np.stack([np.array(s.split(), dtype=np.uint8) for s in strings])
    np.testing.assert_array_equal(out, naive)
    assert pixel_parser.parse_pixel_strings([], 5, "x.csv").shape == (0, 5)


def test_parse_pixel_strings_names_the_row():
    strings = ["1 2 3", "4 5 6", "7 8", "9 9 9"]
    with pytest.raises(FacelabError, match=r"^x\.csv: row 12: pixels has 2 values, expected 3$"):
        pixel_parser.parse_pixel_strings(strings, 3, "x.csv", first_row=10)


# --- image folders ------------------------------------------------------------------------------


def write_image(path: Path, side: int = 48, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((side, side), value, np.uint8)
    image[: side // 2] = 255 - value
    assert cv2.imwrite(str(path), image)


def test_class_folders_with_aliases(tmp_path):
    write_image(tmp_path / "anger" / "a.png", value=10)
    write_image(tmp_path / "Happiness" / "b.jpg", value=20)
    write_image(tmp_path / "happiness" / "c.jpeg", side=96, value=30)  # resized to 48
    write_image(tmp_path / "SAD" / "d.png", side=32, value=40)
    (tmp_path / "anger" / "notes.txt").write_text("ignored")
    data = readers.read_fer_folder(tmp_path)
    assert data.images.shape == (4, 48, 48) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64
    assert sorted(data.labels.tolist()) == [0, 3, 3, 4]
    assert data.usage is None
    # Grayscale content survives (JPEG is lossy, so loosely).
    first = data.images[data.labels.tolist().index(0)]
    assert abs(int(first[40, 0]) - 10) <= 2 and abs(int(first[0, 0]) - 245) <= 2


def test_split_folders(tmp_path):
    write_image(tmp_path / "train" / "angry" / "a.png")
    write_image(tmp_path / "train" / "happy" / "b.png")
    write_image(tmp_path / "val" / "surprise" / "c.png")
    write_image(tmp_path / "test" / "neutral" / "d.png")
    write_image(tmp_path / "test" / "fearful" / "e.png")
    data = readers.read_fer_folder(tmp_path, image_size=24)
    assert data.images.shape == (5, 24, 24)
    pairs = sorted(zip(data.usage.tolist(), data.labels.tolist()))
    assert pairs == [("PrivateTest", 2), ("PrivateTest", 6), ("PublicTest", 5), ("Training", 0), ("Training", 3)]


def test_read_emotion_source_dispatches(tmp_path):
    write_image(tmp_path / "faces" / "disgust" / "a.png")
    assert readers.read_emotion_source(tmp_path / "faces").labels.tolist() == [1]
    csv = write(tmp_path / "f.csv", fer_csv(fake_images(2, 48), [2, 5], columns=("emotion", "pixels")))
    data = readers.read_emotion_source(csv)
    assert data.images.shape == (2, 48, 48) and data.labels.tolist() == [2, 5]
    assert readers.read_emotion_source(csv, image_size=32).images.shape == (2, 32, 32)


# --- the bad-input table ------------------------------------------------------------------------

FER_HEADER = "emotion,pixels,Usage"
KP_HEADER = ",".join([*KEYPOINT_COLUMNS, "Image"])


def fer_file(bad_line: str | None, at: int = 3, n: int = 4) -> str:
    lines = fer_lines(n)
    if bad_line is not None:
        lines[at - 1] = bad_line
    return FER_HEADER + "\n" + "\n".join(lines) + "\n"


def kp_file(bad_line: str, at: int = 2, n: int = 3) -> str:
    lines = kp_lines(n)
    lines[at - 1] = bad_line
    return KP_HEADER + "\n" + "\n".join(lines) + "\n"


PIX = pixel_text(np.arange(FER) % 256)
KPIX = pixel_text(np.arange(KP) % 256)
COORDS = [f"{v:.2f}" for v in np.linspace(10, 80, 30)]


def coords_with(k: int, value: str) -> str:
    cells = list(COORDS)
    cells[k] = value
    return ",".join(cells)


def truncated_gzip() -> bytes:
    data = gzip.compress(fer_file(None).encode())
    return data[: len(data) // 2]


def corrupt_gzip() -> bytes:
    data = bytearray(gzip.compress(fer_file(None).encode()))
    data[20:60] = b"\xff" * 40
    return bytes(data)


# (id, reader, file name, content, expected row or None, words the message must hold)
BAD_INPUTS = [
    ("empty-file", "fer", "fer2013.csv", "", None, "empty"),
    ("blank-file", "keypoints", "training.csv", "\n\n", None, "empty"),
    ("header-only", "fer", "fer2013.csv", FER_HEADER + "\n", None, "no data rows"),
    ("header-only-keypoints", "keypoints", "training.csv", KP_HEADER, None, "no data rows"),
    (
        "missing-Image",
        "keypoints",
        "training.csv",
        ",".join(KEYPOINT_COLUMNS) + "\n" + ",".join(COORDS) + "\n",
        None,
        "missing column 'Image'",
    ),
    (
        "missing-coordinate",
        "keypoints",
        "training.csv",
        ",".join([*KEYPOINT_COLUMNS[1:], "Image"]) + "\n" + ",".join(COORDS[1:]) + "," + KPIX + "\n",
        None,
        "missing column 'left_eye_center_x'",
    ),
    ("missing-pixels", "fer", "fer2013.csv", "emotion,Usage\n3,Training\n", None, "missing column 'pixels'"),
    ("missing-emotion", "fer", "test.csv", "pixels\n" + PIX + "\n", None, "missing column 'emotion'"),
    (
        "too-few-pixels",
        "fer",
        "fer2013.csv",
        fer_file("3," + " ".join(PIX.split()[:-1]) + ",Training"),
        3,
        "pixels has 2303 values, expected 2304",
    ),
    (
        "too-many-pixels",
        "fer",
        "fer2013.csv",
        fer_file("3," + PIX + " 7,Training", at=4),
        4,
        "pixels has 2305 values, expected 2304",
    ),
    ("empty-pixels", "fer", "fer2013.csv", fer_file("3,,Training", at=1), 1, "pixels has 0 values"),
    (
        "non-numeric-pixel",
        "fer",
        "fer2013.csv",
        fer_file("3," + PIX.replace(" 17 ", " 1x7 ", 1) + ",Training"),
        3,
        "not a whole number",
    ),
    (
        "float-pixel",
        "fer",
        "fer2013.csv",
        fer_file("3," + PIX.replace(" 17 ", " 17.5 ", 1) + ",Training", at=2),
        2,
        "'17.5' is not a whole number",
    ),
    (
        "pixel-over-255",
        "fer",
        "fer2013.csv",
        fer_file("3," + PIX.replace(" 17 ", " 256 ", 1) + ",Training"),
        3,
        "value 256 is out of range 0-255",
    ),
    (
        "pixel-four-digits",
        "fer",
        "fer2013.csv",
        fer_file("3," + PIX.replace(" 17 ", " 1000 ", 1) + ",Training"),
        3,
        "value 1000 is out of range",
    ),
    (
        "pixel-negative",
        "fer",
        "fer2013.csv",
        fer_file("3," + PIX.replace(" 17 ", " -1 ", 1) + ",Training"),
        3,
        "value -1 is out of range",
    ),
    (
        "keypoint-image-short",
        "keypoints",
        "training.csv",
        kp_file(",".join(COORDS) + "," + KPIX[:-4]),
        2,
        "Image has 9215 values, expected 9216",
    ),
    (
        "keypoint-pixel-300",
        "keypoints",
        "training.csv",
        kp_file(",".join(COORDS) + ",300 " + KPIX[2:], at=3),
        3,
        "Image value 300 is out of range",
    ),
    (
        "keypoint-non-numeric",
        "keypoints",
        "training.csv",
        kp_file(coords_with(5, "abc") + "," + KPIX),
        2,
        "left_eye_inner_corner_y is not a number: 'abc'",
    ),
    (
        "keypoint-outside-image",
        "keypoints",
        "training.csv",
        kp_file(coords_with(0, "120.5") + "," + KPIX, at=3),
        3,
        "left_eye_center_x = 120.5 is outside the 96x96 image",
    ),
    (
        "keypoint-negative",
        "keypoints",
        "training.csv",
        kp_file(coords_with(29, "-3") + "," + KPIX, at=1),
        1,
        "mouth_center_bottom_lip_y = -3 is outside",
    ),
    ("label-7", "fer", "fer2013.csv", fer_file("7," + PIX + ",Training"), 3, "emotion label 7 is outside 0-6"),
    ("label-negative", "fer", "fer2013.csv", fer_file("-1," + PIX + ",Training", at=2), 2, "label -1 is outside"),
    ("label-fraction", "fer", "fer2013.csv", fer_file("2.5," + PIX + ",Training"), 3, "label '2.5' is not an integer"),
    ("label-word", "fer", "fer2013.csv", fer_file("happy," + PIX + ",Training", at=4), 4, "not an integer"),
    ("label-missing", "fer", "fer2013.csv", fer_file("," + PIX + ",Training", at=1), 1, "label is missing"),
    ("bad-usage", "fer", "fer2013.csv", fer_file("3," + PIX + ",Validation"), 3, "Usage is 'Validation'"),
    ("extra-field", "fer", "fer2013.csv", fer_file("3," + PIX + ",Training,x", at=2), 2, "has 4 fields, expected 3"),
    (
        "missing-field",
        "keypoints",
        "training.csv",
        kp_file(",".join(COORDS[1:]) + "," + KPIX),
        2,
        "has 30 fields, expected 31",
    ),
    (
        "quoted-too-few",
        "fer",
        "quoted.csv",
        FER_HEADER + "\n" + "\n".join(f'{k},"{p}",Training' for k, p in enumerate([PIX, PIX, "1 2"])) + "\n",
        3,
        "pixels has 2 values",
    ),
    ("truncated-gzip", "fer", "fer2013.csv.gz", truncated_gzip(), None, "truncated"),
    ("corrupt-gzip", "fer", "fer2013.csv.gz", corrupt_gzip(), None, "corrupt"),
    (
        "gzip-trailing-garbage",
        "fer",
        "fer2013.csv.gz",
        gzip.compress(fer_file(None).encode()) + b"junk",
        None,
        "corrupt",
    ),
    ("not-gzip-after-magic", "fer", "fer2013.csv.gz", b"\x1f\x8b" + b"\x00" * 30, None, "corrupt"),
    ("missing-file", "keypoints", None, None, None, "not found"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_naming_file_row_and_problem(tmp_path, case):
    _, reader, name, content, row, words = case
    path = tmp_path / (name or "does-not-exist.csv")
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    read = readers.read_keypoints_csv if reader == "keypoints" else readers.read_fer_csv
    with pytest.raises(FacelabError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert path.name in message and message.startswith(str(path))
    assert words in message, message
    rows = re.findall(r"\brow (\d+)\b", message)
    assert rows == ([str(row)] if row is not None else []), message
    assert len(message) < 400


@pytest.mark.parametrize("block_size_bytes", [2000, 50_000])
@pytest.mark.parametrize("name", ["big.csv", "big.csv.gz"])
def test_bad_row_far_into_a_file_is_named(tmp_path, monkeypatch, block_size_bytes, name):
    """Row numbers stay right across blocks, threads, blank lines and CRLF; the first bad row wins."""
    monkeypatch.setattr(pixel_parser, "BLOCK_BYTES", block_size_bytes)
    monkeypatch.setattr(pixel_parser, "PARSE_THREADS", 2)
    monkeypatch.setattr(pixel_parser, "PARALLEL_MIN_BYTES", 0)
    gz = name.endswith(".gz")
    lines = fer_lines(40)
    lines[36] = lines[36].replace(",Training", ",Nonsense")  # row 37 (+1 blank line = 38)
    lines[30] = "9" + lines[30][1:]  # row 31 (+1 = 32): label 9
    lines[33] = lines[33].replace(" ", " x ", 1)  # row 34 (+1 = 35): pixels
    text = FER_HEADER + "\n" + "\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n"
    path = write(tmp_path / name, text, gz=gz, newline="\r\n")
    with pytest.raises(FacelabError, match=re.escape(name) + r": row 35: pixels value 'x'"):
        readers.read_fer_csv(path)
    lines[33] = fer_lines(34)[33]
    path = write(
        tmp_path / name,
        FER_HEADER + "\n" + "\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n",
        gz=gz,
        newline="\r\n",
    )
    with pytest.raises(FacelabError, match=r"row 32: emotion label 9 is outside 0-6"):
        readers.read_fer_csv(path)


def test_unknown_class_folder_is_named(tmp_path):
    write_image(tmp_path / "happy" / "a.png")
    write_image(tmp_path / "bored" / "b.png")
    with pytest.raises(FacelabError, match=r"bored.*unknown emotion class folder 'bored'") as info:
        readers.read_fer_folder(tmp_path)
    assert "\n" not in str(info.value)


def test_unknown_folder_beside_split_folders_is_named(tmp_path):
    write_image(tmp_path / "train" / "happy" / "a.png")
    write_image(tmp_path / "extra" / "happy" / "b.png")
    with pytest.raises(FacelabError, match=r"extra"):
        readers.read_fer_folder(tmp_path)


def test_unreadable_image_is_named(tmp_path):
    write_image(tmp_path / "sad" / "good.png")
    (tmp_path / "sad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(FacelabError, match=r"broken\.png.*not a readable image") as info:
        readers.read_fer_folder(tmp_path)
    assert "\n" not in str(info.value)


def test_folder_without_images(tmp_path):
    (tmp_path / "happy").mkdir()
    with pytest.raises(FacelabError, match="no images"):
        readers.read_fer_folder(tmp_path)


def test_fer_labels_cover_the_table():
    assert len(FER_LABELS) == 7
