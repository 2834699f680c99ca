"""The demo page's work without a browser: what it shows for a photo, for bad files, and the page itself."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from facelab.serve import demo, photo_batches, photos
from facelab.serve.drawing import annotate
from tests.support.networks import TINY_EMOTION_CLASSES as CLASSES
from tests.support.photos import bomb_png, two_faces_photo


@pytest.fixture(scope="module")
def analyzer(tiny_keypoint_network, tiny_emotion_network):
    from facelab.serve.keras_runtime import FaceAnalyzer

    return FaceAnalyzer(tiny_keypoint_network, tiny_emotion_network, CLASSES)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    return two_faces_photo(tmp_path_factory.mktemp("demo") / "two-faces.jpg")


def test_a_photo_gives_predicts_record_its_picture_table_and_status(analyzer, photo):
    picture, status, table, record = demo.respond(analyzer, {"path": str(photo), "orig_name": "two-faces.jpg"})
    [expected] = photo_batches.analyse_images([("two-faces.jpg", lambda: photos.read_photo(photo))], analyzer)
    assert record == expected  # exactly facelab predict's record
    assert len(record["faces"]) == 2
    assert picture.shape == (480, 720, 3) and picture.dtype == np.uint8
    assert list(table.columns) == ["face", "emotion", "probability", *CLASSES, "box x y w h"]
    assert table["face"].tolist() == [1, 2]
    assert table["emotion"].tolist() == [f["emotion"] for f in record["faces"]]
    assert np.allclose(table[CLASSES].sum(axis=1), 1, atol=2e-3)
    labels = ", ".join(f"{i}. {f['emotion']} {f['probability']:.2f}" for i, f in enumerate(record["faces"], start=1))
    assert status == f"**2 faces** in two-faces.jpg: {labels}"


def test_the_picture_is_predicts_annotated_photo(analyzer, photo):
    import cv2

    record, picture = demo.analyse_bytes(photo.read_bytes(), "p.jpg", analyzer)
    gray = photos.read_photo(photo)
    assert np.array_equal(picture, cv2.cvtColor(annotate(gray, record), cv2.COLOR_BGR2RGB))


def test_a_large_photo_is_shown_smaller_but_measured_in_photo_pixels(analyzer, tmp_path):
    import cv2

    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.full((1500, 4000), 120, np.uint8))
    record, picture = demo.analyse_bytes(big.read_bytes(), "big.png", analyzer)
    assert (record["width"], record["height"]) == (4000, 1500)
    assert picture.shape == (768, demo.DISPLAY_MAX_SIDE, 3)
    assert demo.status_line(record) == "No face found in big.png (4000x1500)."


@pytest.mark.parametrize(
    "payload, message",
    [
        ("text", "notes.txt: not an image file (no known image format)"),
        ("bomb", "bomb.png: image too large: 400.0 megapixels (limit 100), refused before decoding"),
        ("empty", "empty.jpg: empty file (0 bytes), not an image"),
        ("missing", "gone.jpg: cannot read the upload: No such file or directory"),
        ("bad-base64", "webcam.png: the upload is not valid base64"),
        ("no-file", "x.png: the upload holds no file"),
    ],
)
def test_bad_uploads_are_one_line_on_the_page(analyzer, tmp_path, payload, message):
    files = {"text": b"name,value\nnot, an image\n", "bomb": bomb_png(20000, 20000), "empty": b""}
    names = {"text": "notes.txt", "bomb": "bomb.png", "empty": "empty.jpg"}
    if payload in files:
        path = tmp_path / "upload"
        path.write_bytes(files[payload])
        value = {"path": str(path), "orig_name": names[payload]}
    elif payload == "missing":
        value = {"path": str(tmp_path / "gone.jpg")}
    elif payload == "bad-base64":
        value = {"path": None, "url": "data:image/png;base64,@@@", "orig_name": "webcam.png"}
    else:
        value = {"path": None, "url": None, "orig_name": "x.png"}
    picture, status, table, record = demo.respond(analyzer, value)
    assert picture is None and table.empty
    assert record["error"] == message
    assert status == f"**Cannot analyse this file:** {message}"


def test_a_webcam_shot_as_a_data_url_is_read(analyzer, photo):
    url = "data:image/jpeg;base64," + base64.b64encode(photo.read_bytes()).decode()
    _, status, table, record = demo.respond(analyzer, {"path": None, "url": url, "orig_name": "webcam.jpg"})
    assert len(record["faces"]) == 2 and len(table) == 2 and status.startswith("**2 faces** in webcam.jpg")


def test_a_failure_inside_the_analyser_is_reported_not_raised(analyzer, photo, monkeypatch):
    monkeypatch.setattr(analyzer, "analyse", lambda faces: 1 / 0)
    picture, status, table, record = demo.respond(analyzer, {"path": str(photo), "orig_name": "p.jpg"})
    assert picture is None and table.empty
    assert status == "**Cannot analyse this file:** internal error: ZeroDivisionError: division by zero"


def test_cleared_input_resets_the_page(analyzer):
    picture, status, table, record = demo.respond(analyzer, None)
    assert (picture, status, record) == (None, demo.READY, None) and table.empty


def test_build_app_is_a_gradio_page_over_the_given_analyser(analyzer):
    gr = pytest.importorskip("gradio")
    app = demo.build_app(analyzer, "about these models")
    assert isinstance(app, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in app.blocks.values()}
    assert {demo.UPLOAD_ID, demo.WEBCAM_ID, demo.PICTURE_ID, demo.STATUS_ID, demo.TABLE_ID} <= ids
    webcam = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == demo.WEBCAM_ID)
    assert webcam.sources == ["webcam"]
    # both inputs run the analysis without Gradio decoding the file first
    analyses = [fn for fn in app.fns.values() if fn.name == "on_photo"]
    assert len(analyses) == 2 and not any(fn.preprocess for fn in analyses)
