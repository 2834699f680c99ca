"""The face analyser on ONNX Runtime: ``FaceAnalyzer``'s interface with onnxruntime, numpy and OpenCV only.

``facelab export onnx`` (``facelab.serve.onnx_export``) writes each champion Keras model, its test-time
averaging included, as one ONNX graph (input ``image``: (N, H, W, 1) float32 0-255 pixels; output
``keypoints`` (N, 30) pixel coordinates or ``probabilities`` (N, classes)), computing in float32
whatever precision the model was trained in, with the facts a runtime needs in the file's metadata
(``META_*``: task, input size, classes, the registry version it came from, the training precision and
the graph's), logs it next to the Keras model (an artifact of the version's run) and tags the version
with where it is (``ONNX_TAG``) and its sha256 (``SHA256_TAG``).

``OnnxFaceAnalyzer`` runs those files with the same ``keypoint_size`` / ``emotion_size`` /
``classes`` / ``keypoints`` / ``probabilities`` / ``analyse`` as ``facelab.serve.keras_runtime.FaceAnalyzer``,
so ``facelab.serve.photo_batches`` (photos, detection, batching), ``facelab predict`` and ``facelab.serve.demo``
run it unchanged. ``load_onnx_analyzer`` finds the files as ``loading.load_keras_analyzer`` finds the Keras
models: local ``.onnx`` files, or the registry (champion by default) through the versions' tags.

Nothing here imports TensorFlow or Keras (a test checks it in a fresh interpreter); MLflow is
imported (through ``facelab.tracking.store`` and ``facelab.tracking.registry``) only to fetch files from the
registry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.serve.analysis import FaceAnalysis
from facelab.tracking import uris

BATCH_SIZE = 128  # faces per ONNX Runtime call, as inference.BATCH_SIZE
INPUT_NAME = "image"
OUTPUT_NAMES = {"keypoints": "keypoints", "emotion": "probabilities"}
SUFFIX = ".onnx"
# Metadata written into each exported file (onnx ModelProto.metadata_props).
META_TASK, META_INPUT_SIZE, META_CLASSES, META_SOURCE = (
    "facelab.task",
    "facelab.input_size",
    "facelab.classes",
    "facelab.source",
)
# The dtype policy the Keras model was trained in (float32, mixed_bfloat16, mixed_float16), and what the ONNX
# graph computes in (always float32: ``onnx_export`` rebuilds a mixed-precision model in float32 first).
META_TRAINED_PRECISION, META_GRAPH_PRECISION = "facelab.trained_precision", "facelab.graph_precision"
# Tags on the registered Keras version: where its ONNX twin is, and its sha256.
ONNX_TAG, SHA256_TAG = "facelab.onnx", "facelab.onnx_sha256"


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxModel:
    """One exported model: an ONNX Runtime session on the CPU, run in batches of ``BATCH_SIZE`` faces.

    ``threads``: ONNX Runtime's intra-op threads (default: one per physical core). ``spin``: whether idle
    threads spin-wait for work (ONNX Runtime's default) instead of sleeping; off here: on a 2-core machine
    busy with other work (a training) spinning threads halved the faces/s of one face per call, and never
    helped (``benchmarks/bench_onnx.py``).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spin: bool = False):
        import onnxruntime as ort

        self.path = str(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a missing or broken file
            text = str(exc).strip().splitlines()
            raise FacelabError(
                f"{path}: cannot load the ONNX model: {text[0] if text else type(exc).__name__}"
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
            raise FacelabError(f"{path}: not a facelab model (one (N, H, W, 1) input and one output expected)")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_size = int(inputs[0].shape[1])
        self.outputs = outputs[0].shape[-1]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Model outputs for (N, H, W) or (N, H, W, 1) images of 0-255 pixels (as ``inference.predict``)."""
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[..., None]
        outputs = [
            self.session.run([self.output_name], {self.input_name: images[i : i + batch_size]})[0]
            for i in range(0, len(images), batch_size)
        ]
        if not outputs:
            return np.zeros((0, int(self.outputs)), np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)


class OnnxFaceAnalyzer(FaceAnalysis):
    """Keypoints + emotion for square grayscale faces, from two exported ONNX files (no TensorFlow)."""

    runtime = "onnx"

    def __init__(self, keypoint_model, emotion_model, classes: Sequence[str] | None = None, threads: int | None = None):
        self.keypoint_model = (
            keypoint_model if isinstance(keypoint_model, OnnxModel) else OnnxModel(keypoint_model, threads)
        )
        self.emotion_model = (
            emotion_model if isinstance(emotion_model, OnnxModel) else OnnxModel(emotion_model, threads)
        )
        if classes is None:
            stored = self.emotion_model.metadata.get(META_CLASSES)
            if not stored:
                raise FacelabError(f"{self.emotion_model.path}: no class list in the file: pass --classes")
            classes = stored.split(",")
        self.classes = list(classes)
        if self.emotion_model.outputs != len(self.classes):
            raise FacelabError(
                f"{self.emotion_model.path}: the emotion model has {self.emotion_model.outputs} outputs but "
                f"{len(self.classes)} classes were given ({','.join(self.classes)})"
            )
        self.keypoint_size = self.keypoint_model.input_size
        self.emotion_size = self.emotion_model.input_size

    def run_model(self, model: OnnxModel, faces: np.ndarray) -> np.ndarray:
        return model(faces)


# --- finding the files -------------------------------------------------------------------------


def _local(path: str) -> str:
    if not Path(path).is_file():
        raise FacelabError(f"{path}: no such ONNX file")
    return path


def registry_onnx(uri: str, folder: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """Download the ONNX twin of the Keras version ``uri`` into ``folder``: its path, and the version's tags."""
    from facelab.tracking import registry, store

    name, alias, number = uris.parse(uri)
    try:
        version = registry.get_version(name, alias, number)
    except FacelabError:
        raise
    except Exception as exc:  # MLflow's not-found error
        raise FacelabError(f"{uri}: no such model version in {store.tracking_uri()}: {exc}") from None
    tags = dict(version.tags)
    where = tags.get(ONNX_TAG)
    if not where:
        raise FacelabError(
            f"{uri} (version {version.version}) has no ONNX file yet: run `facelab export onnx` "
            "(it exports the champions) or pass --runtime keras"
        )
    path = store.download(where, folder, "download ONNX model")
    expected = tags.get(SHA256_TAG)
    if expected and sha256(path) != expected:
        raise FacelabError(f"{where}: sha256 differs from the version's tag {SHA256_TAG}: the file was changed")
    return path, tags


def load_onnx_analyzer(
    params: dict,
    keypoints_model: str | None = None,
    emotion_model: str | None = None,
    classes: Sequence[str] | None = None,
    threads: int | None = None,
) -> OnnxFaceAnalyzer:
    """``loading.load_keras_analyzer`` on ONNX Runtime: by default the champions' exported files.

    ``keypoints_model`` / ``emotion_model``: a local ``.onnx`` file, or a registry URI of a Keras
    version (``models:/name@alias``, ``models:/name/3``) whose ONNX twin ``facelab export onnx`` logged.
    The classes: ``classes``, else the ONNX file's own list, else the version's ``classes`` tag,
    else ``data.emotion.classes``.
    """
    names = params["tracking"]
    keypoints_model = keypoints_model or uris.alias_uri(names["keypoints_model"])
    emotion_model = emotion_model or uris.alias_uri(names["emotion_model"])
    if not all(uris.is_local(uri, SUFFIX) for uri in (keypoints_model, emotion_model)):
        from facelab.tracking import store

        store.connect(names["experiment"])
    with tempfile.TemporaryDirectory(prefix="facelab-onnx-") as tmp:  # the sessions hold the graphs in memory
        tags: dict[str, str] = {}
        if uris.is_local(keypoints_model, SUFFIX):
            kp_path = _local(keypoints_model)
        else:
            kp_path, _ = registry_onnx(keypoints_model, Path(tmp) / "keypoints")
        if uris.is_local(emotion_model, SUFFIX):
            em_path = _local(emotion_model)
        else:
            em_path, tags = registry_onnx(emotion_model, Path(tmp) / "emotion")
        keypoints, emotion = OnnxModel(kp_path, threads), OnnxModel(em_path, threads)
    if classes is None and not emotion.metadata.get(META_CLASSES):
        stored = tags.get("classes")
        classes = stored.split(",") if stored else list(params["data"]["emotion"]["classes"])
    return OnnxFaceAnalyzer(keypoints, emotion, classes)
