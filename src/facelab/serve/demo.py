"""``facelab demo``: a Gradio page over the face analyser: a photo in, every face's box, keypoints and emotion out.

Upload a photo (or take one with the webcam) and the page shows it with each face's box, its 15
keypoints and ``emotion probability`` drawn (``drawing.annotate``, what ``facelab predict``
writes), a table of every face's class probabilities, and the JSON record ``facelab predict``
writes. The work is ``photo_batches.iter_analysed`` on the photo, exactly as on the command line: the
same reading (``photos.decode_photo``: EXIF orientation, 16-bit, alpha), face detection, crops,
models and record. Nothing here detects, crops or draws by itself.

* ``build_app(analyzer)`` builds the page over an analyser already loaded (``loading.load_analyzer``'s
  ``FaceAnalyzer``, or anything with its ``analyse`` / ``keypoint_size`` / ``classes``, such as the
  ONNX Runtime one): the models are loaded once, before the page exists, never per request.
* ``serve(params, ...)`` loads the champion analyser (or the given model URIs and classes, as
  ``facelab predict`` does) and serves the page on 127.0.0.1.

Bad input never stops the server: a file that is not an image, an image above ``photos.MAX_PIXELS``
(refused from its header, so a decompression bomb is never decoded) or a truncated one gets one line
on the page (``photos``' message), and a file above ``max_file_mb`` is refused by Gradio before it
is stored. The page's uploads reach the analyser as the raw file (``preprocess=False``): Gradio only
checks that the file is one of its own uploads and never decodes it itself.

Requests are analysed one at a time (``CONCURRENCY``): the Keras models and the 2-core machines
facelab targets gain nothing from running photos in parallel.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from facelab.errors import FacelabError
from facelab.extras import DEMO_MODULES, require
from facelab.serve import loading, photos
from facelab.serve.drawing import annotate
from facelab.serve.photo_batches import iter_analysed
from facelab.tracking import uris

HOST, PORT = "127.0.0.1", 7860
MAX_FILE_MB = 25  # uploads above this are refused by Gradio before they are stored
DISPLAY_MAX_SIDE = 2048  # the annotated picture is shrunk to this for the page (the JSON keeps photo pixels)
CONCURRENCY = 1
TITLE = "facelab: keypoints and emotion of every face in a photo"
# System fonts only: the page must render without reaching any other host (Gradio's default theme
# fetches Google fonts).
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "Consolas", "monospace"]
# Element ids the end-to-end test (and anyone scripting the page) finds things by.
UPLOAD_ID, WEBCAM_ID, PICTURE_ID, STATUS_ID, TABLE_ID, RECORD_ID = (
    "facelab-upload",
    "facelab-webcam",
    "facelab-picture",
    "facelab-status",
    "facelab-faces",
    "facelab-record",
)
ERROR_PREFIX = "Cannot analyse this file"
READY = "Upload a photo or take one with the webcam."


# --- the work, independent of Gradio ---------------------------------------------------------


def analyse_bytes(data: bytes, name: str, analyzer) -> tuple[dict, np.ndarray | None]:
    """``(record, annotated RGB picture or None)`` of one image file given as bytes.

    The record is ``facelab predict``'s (``{"photo", "error"}`` for a file that is not a readable image).
    """
    [(record, gray)] = list(iter_analysed([(name, partial(photos.decode_photo, data, name))], analyzer))
    if gray is None:
        return record, None
    picture = cv2.cvtColor(annotate(gray, record), cv2.COLOR_BGR2RGB)
    scale = DISPLAY_MAX_SIDE / max(picture.shape[:2])
    if scale < 1:
        picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return record, picture


def table_rows(record: dict, classes: Sequence[str]) -> list[list]:
    """One row per face: its number, emotion, probability, every class's probability and its box."""
    rows = []
    for number, face in enumerate(record.get("faces", []), start=1):
        probabilities = [face["probabilities"].get(c) for c in classes]
        rows.append([number, face["emotion"], face["probability"], *probabilities, " ".join(map(str, face["box"]))])
    return rows


def table_headers(classes: Sequence[str]) -> list[str]:
    return ["face", "emotion", "probability", *classes, "box x y w h"]


def status_line(record: dict) -> str:
    """The one line the page shows above the results (Markdown)."""
    if "error" in record:
        return f"**{ERROR_PREFIX}:** {record['error']}"
    faces = record["faces"]
    if not faces:
        return f"No face found in {record['photo']} ({record['width']}x{record['height']})."
    labels = ", ".join(f"{i}. {f['emotion']} {f['probability']:.2f}" for i, f in enumerate(faces, start=1))
    return f"**{len(faces)} face{'s' if len(faces) != 1 else ''}** in {record['photo']}: {labels}"


def upload_bytes(payload) -> tuple[bytes, str]:
    """The file behind a Gradio image payload (``FileData``: a file Gradio stored, or a ``data:`` URL)."""
    if isinstance(payload, dict):
        name = payload.get("orig_name") or Path(payload.get("path") or "photo").name
        path, url = payload.get("path"), payload.get("url") or ""
    else:  # a path, as Gradio's own API clients may send
        name, path, url = Path(str(payload)).name, str(payload), ""
    if path:
        try:
            return Path(path).read_bytes(), name
        except OSError as exc:
            raise FacelabError(f"{name}: cannot read the upload: {exc.strerror or exc}") from None
    if url.startswith("data:") and "," in url:
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True), name
        except (binascii.Error, ValueError):
            raise FacelabError(f"{name}: the upload is not valid base64") from None
    raise FacelabError(f"{name}: the upload holds no file")


def face_table(record: dict, classes: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(table_rows(record, classes), columns=table_headers(classes))


def respond(analyzer, payload) -> tuple[np.ndarray | None, str, pd.DataFrame, dict | None]:
    """What the page shows for an upload (``None``: cleared): picture, status line, table and record.

    Never raises: a file that is not a readable image, and any other failure, is the status line.
    """
    if payload is None:
        return None, READY, face_table({}, analyzer.classes), None
    try:
        data, name = upload_bytes(payload)
        record, picture = analyse_bytes(data, name, analyzer)
    except FacelabError as exc:
        record, picture = {"error": str(exc)}, None
    except Exception as exc:  # a bug must not take the page down: say what failed, keep serving
        record, picture = {"error": f"internal error: {type(exc).__name__}: {exc}"}, None
    return picture, status_line(record), face_table(record, analyzer.classes), record


# --- the page --------------------------------------------------------------------------------


def build_app(analyzer, description: str = "", max_file_mb: float = MAX_FILE_MB):
    """The Gradio page over ``analyzer`` (loaded once by the caller): returns a ``gradio.Blocks``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    import gradio as gr

    def on_photo(payload):
        return respond(analyzer, payload)

    theme = gr.themes.Default(font=FONTS, font_mono=MONO_FONTS)
    with gr.Blocks(title="facelab demo", analytics_enabled=False) as app:
        app.facelab_theme = theme  # Gradio 6 takes the theme in launch() (serve passes it)
        gr.Markdown(f"# {TITLE}\n{description}".strip())
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Photo file"):
                        # Any file is taken (no file_types): facelab.serve.photos, not the browser, says what is
                        # wrong with one that is not an image, on the page.
                        upload = gr.File(label="Photo (JPEG, PNG, ...)", type="filepath", elem_id=UPLOAD_ID)
                    with gr.Tab("Webcam"):
                        webcam = gr.Image(label="Take a photo", sources=["webcam"], type="filepath", elem_id=WEBCAM_ID)
                gr.Markdown(
                    f"At most {max_file_mb:g} MB and {photos.MAX_PIXELS / 1e6:g} megapixels. "
                    "The photo stays on this machine."
                )
            with gr.Column(scale=2):
                status = gr.Markdown(READY, elem_id=STATUS_ID)
                picture = gr.Image(
                    label="Faces: box, 15 keypoints, emotion and its probability",
                    show_label=False,  # the label would cover the top of the picture (and a face's label there)
                    type="numpy",
                    interactive=False,
                    format="png",
                    elem_id=PICTURE_ID,
                )
        table = gr.Dataframe(
            value=face_table({}, analyzer.classes),
            label="Class probabilities of every face (faces numbered largest first)",
            interactive=False,
            elem_id=TABLE_ID,
        )
        with gr.Accordion("The record (what facelab predict writes)", open=False):
            record = gr.JSON(elem_id=RECORD_ID)
        # preprocess=False: the handler gets the stored upload itself (Gradio checks it is one of its
        # uploads) and facelab.serve.photos reads it; Gradio's own preprocessing would decode it with Pillow first.
        for source in (upload, webcam):
            source.change(
                on_photo,
                inputs=source,
                outputs=[picture, status, table, record],
                preprocess=False,
                concurrency_limit=CONCURRENCY,
                concurrency_id="analyse",
                show_progress="minimal",
                show_progress_on=picture,
            )
    app.facelab_max_file_mb = max_file_mb
    return app


def launch(app, host: str = HOST, port: int = PORT, block: bool = True):
    """Serve ``app`` (from ``build_app``) on ``host:port``; with ``block=False`` return at once (tests)."""
    max_mb = getattr(app, "facelab_max_file_mb", MAX_FILE_MB)
    app.queue(default_concurrency_limit=CONCURRENCY)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=True,
        max_file_size=f"{max_mb:g}mb",
        prevent_thread_lock=not block,
        quiet=not block,
        theme=getattr(app, "facelab_theme", None),
    )
    return app


def describe(params: dict, keypoints_model: str | None, emotion_model: str | None, runtime: str) -> str:
    names = params["tracking"]
    kp = keypoints_model or uris.alias_uri(names["keypoints_model"])
    em = emotion_model or uris.alias_uri(names["emotion_model"])
    return f"Models: keypoints `{kp}`, emotion `{em}` ({'ONNX Runtime' if runtime == 'onnx' else 'Keras'})."


def serve(
    params: dict,
    keypoints_model: str | None = None,
    emotion_model: str | None = None,
    classes: Sequence[str] | None = None,
    *,
    runtime: str = "keras",
    host: str = HOST,
    port: int = PORT,
    max_file_mb: float = MAX_FILE_MB,
    block: bool = True,
):
    """Load the analyser once and serve the page on ``host:port`` (blocks unless ``block=False``)."""
    require("demo", DEMO_MODULES, "facelab demo")
    analyzer = loading.load_analyzer(params, keypoints_model, emotion_model, classes, runtime)  # predict's
    app = build_app(analyzer, describe(params, keypoints_model, emotion_model, runtime), max_file_mb)
    if block:
        print(f"facelab demo: http://{host}:{port} (Ctrl-C stops it)", flush=True)
    return launch(app, host, port, block)
