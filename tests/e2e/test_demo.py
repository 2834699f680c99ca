"""End to end in a real browser: the page ``facelab demo`` serves, driven by Chromium through Playwright.

The server is ``demo.serve`` itself (what ``facelab demo`` runs) on two tiny wrapped models saved as
``.keras`` files (untrained, seeded: this checks the page's mechanics, not the models), on
127.0.0.1. The browser uploads a photo with two faces the Haar detector finds (``tests.support.photos``)
and the page must show two faces, each labelled with an emotion of the model's classes and its
probabilities; then a text file, a decompression bomb and a truncated JPEG, each answered by one
line on the page, and a file above the upload limit, which Gradio refuses with its own message; then
the photo again: the server kept serving, and loaded the models once.

Chromium: ``FACELAB_CHROMIUM``, else ``chromium`` / ``chromium-browser`` / ``google-chrome`` on the
PATH (Debian: ``apt-get install chromium``), else Playwright's own download. Without one (or without
the ``playwright`` and ``gradio`` packages, ``.[demo-test]``) the test skips, unless
``FACELAB_REQUIRE_BROWSER`` is set, as ``.ci/run`` does: there a missing browser fails.

``FACELAB_DEMO_SCREENSHOT=docs/results/demo.png`` also saves the page after the photo there.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from facelab import sandbox
from facelab.serve.browser import CHROMIUM_ENV, chromium_executable, launch
from tests.support.networks import TINY_EMOTION_CLASSES as CLASSES
from tests.support.photos import bomb_png, two_faces_photo

pytestmark = pytest.mark.e2e

REQUIRE_ENV = "FACELAB_REQUIRE_BROWSER"
SCREENSHOT_ENV = "FACELAB_DEMO_SCREENSHOT"
FACES = 2  # in tests.support.photos.two_faces_photo
MAX_FILE_MB = 1  # the server's upload limit here (the photos are far smaller)
WAIT_MS = 120_000  # an answer on a loaded 2-core machine (the first call compiles the models)
REPO = Path(__file__).resolve().parents[2]


def _unavailable(reason: str):
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: this test must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        import gradio  # noqa: F401
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        _unavailable(f"{exc.name} is not installed: pip install -e '.[demo-test]'")
    executable = chromium_executable()
    with sync_playwright() as playwright:
        try:
            launched = launch(playwright, executable)
        except Error as exc:
            _unavailable(
                f"no Chromium to drive ({executable or 'none on the PATH'}: {str(exc).splitlines()[0]}): "
                f"apt-get install chromium, or set {CHROMIUM_ENV}"
            )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, tiny_keypoint_network, tiny_emotion_network):
    """Two tiny wrapped models (as the training stages save them) as .keras files."""
    from facelab.nn import tta

    folder = tmp_path_factory.mktemp("demo-models")
    keypoints = tta.wrap(tiny_keypoint_network, "keypoints", flip=True, shift_px=0)
    emotion = tta.wrap(tiny_emotion_network, "emotion", flip=True, shift_px=0)
    keypoints.save(folder / "keypoints.keras")
    emotion.save(folder / "emotion.keras")
    return folder / "keypoints.keras", folder / "emotion.keras"


@pytest.fixture(scope="module")
def server(browser, model_files):
    """``demo.serve`` on 127.0.0.1 (not blocking), counting how often it loads the models."""
    from facelab.config import load_params
    from facelab.serve import demo, loading

    loads = []
    real = loading.load_analyzer

    def counting(*args, **kwargs):
        loads.append(args[1:3])
        return real(*args, **kwargs)

    port = sandbox.free_port()  # (the free_port fixture is per test; this server serves the module)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "load_analyzer", counting)
        app = demo.serve(
            load_params(REPO / "params.yaml"),
            str(model_files[0]),
            str(model_files[1]),
            CLASSES,
            port=port,
            max_file_mb=MAX_FILE_MB,
            block=False,
        )
        try:
            yield f"http://127.0.0.1:{port}/", loads
        finally:
            app.close()


def _upload(page, path: Path) -> str:
    """Upload ``path`` in the page's file box (clearing the last one) and wait for its status line."""
    box = page.locator("#facelab-upload")
    if box.locator("input[type=file]").count() == 0:
        box.get_by_role("button", name="Clear").click()
    box.locator("input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "name => document.querySelector('#facelab-status').innerText.includes(name)", arg=path.name, timeout=WAIT_MS
    )
    return page.inner_text("#facelab-status").strip()


def _table(page) -> list[list[str]]:
    """The rows of the faces table as shown."""
    cells = page.locator("#facelab-faces [data-testid^='cell-']")
    rows: dict[int, dict[int, str]] = {}
    for i in range(cells.count()):
        cell = cells.nth(i)
        row, column = map(int, cell.get_attribute("data-testid").split("-")[1:3])
        rows.setdefault(row, {})[column] = cell.inner_text().strip()
    return [[cols[c] for c in sorted(cols)] for _, cols in sorted(rows.items())]


def _picture_width(page) -> int:
    """The natural width of the annotated picture shown (0 when none is)."""
    return page.evaluate(
        "() => { const img = document.querySelector('#facelab-picture img'); return img ? img.naturalWidth : 0; }"
    )


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    import cv2

    text = folder / "notes.txt"
    text.write_text("name,value\nthis is, not an image\n")
    bomb = folder / "bomb.png"
    bomb.write_bytes(bomb_png(20000, 20000))  # 400 megapixels in a few kB
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8))
    cut = folder / "cut.jpg"
    cut.write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    return {
        "text": (text, "notes.txt: not an image file"),
        "bomb": (bomb, "bomb.png: image too large: 400.0 megapixels (limit 100), refused before decoding"),
        "truncated": (cut, "cut.jpg: truncated JPEG image"),
    }


def test_page_labels_every_face_and_explains_bad_files(browser, server, tmp_path):
    url, loads = server
    page = browser.new_page(viewport={"width": 1280, "height": 960})
    page.goto(url)
    page.locator("#facelab-upload input[type=file]").wait_for(state="attached", timeout=WAIT_MS)

    status = _upload(page, two_faces_photo(tmp_path / "two-faces.jpg"))
    assert re.match(rf"{FACES} faces in two-faces\.jpg: 1\. \w+ [01]\.\d\d, 2\. \w+ [01]\.\d\d$", status), status
    rows = _table(page)
    assert len(rows) == FACES, rows
    headers = ["face", "emotion", "probability", *CLASSES]
    for number, row in enumerate(rows, start=1):
        face = dict(zip(headers, row))
        assert face["face"] == str(number)
        assert face["emotion"] in CLASSES, row  # each face labelled with one of the model's classes
        probabilities = [float(face[c]) for c in CLASSES]
        assert abs(sum(probabilities) - 1) < 2e-3, row
        assert float(face["probability"]) == max(probabilities) == float(face[face["emotion"]])
        assert len(row[-1].split()) == 4  # its box
    assert _picture_width(page) == 720  # the annotated photo, at its own size
    page.wait_for_timeout(500)  # let the picture settle before the screenshot
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get(SCREENSHOT_ENV):
        Path(os.environ[SCREENSHOT_ENV]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])

    for kind, (path, message) in _bad_files(tmp_path).items():
        status = _upload(page, path)
        assert status.startswith(f"Cannot analyse this file: {message}"), (kind, status)
        assert status.count("\n") == 0, status  # one line
        assert _table(page) == [], kind
        assert _picture_width(page) == 0, kind

    # Above the upload limit: Gradio refuses the file before it is stored, and says so (a toast).
    big = tmp_path / "big.jpg"
    big.write_bytes(np.random.default_rng(1).bytes(int(1.5 * MAX_FILE_MB * 1e6)))
    page.get_by_role("button", name="Clear").click()
    page.locator("#facelab-upload input[type=file]").set_input_files(str(big))
    toast = page.get_by_text(re.compile(r"exceed the maximum allowed size"))
    toast.wait_for(timeout=WAIT_MS)
    assert '"big.jpg"' in toast.inner_text()

    again = tmp_path / "again.jpg"
    shutil.copyfile(tmp_path / "two-faces.jpg", again)
    assert _upload(page, again).startswith(f"{FACES} faces in again.jpg")  # still serving
    assert len(_table(page)) == FACES
    assert len(loads) == 1  # the models were loaded once, before the page served anything
    page.close()
