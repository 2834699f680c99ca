"""``facelab export onnx``: the champion Keras models as ONNX files, checked against Keras, logged beside them.

Each model is exported whole, its test-time averaging included (``facelab.nn.tta``'s ``TtaViews`` and
``TtaAverage``, and the soft-argmax keypoint head ``model.SpatialSoftArgmax``: custom Keras layers
made of plain ``keras.ops``), so an ONNX file answers what ``evaluate`` scored.

The converter: tf2onnx on a ``tf.function`` of ``model(x, training=False)`` (``to_onnx``). Keras 3's
own ``model.export(path, format="onnx")`` is tf2onnx too on the TensorFlow backend, but it traces
``model.__call__`` without ``training=False``, and Keras's preprocessing layers default to
``training=True``: an emotion model with ``crop`` > 0 (``CenterCrop``) or ``image_size`` != its
input (``Resizing``), as every quick/full emotion profile has, then sets the call's training flag
and every BatchNorm after it runs on the batch's own statistics. The exported graph loads and runs,
and its probabilities are off by up to 0.44 (measured on a width-16 model with ``crop: 40``).
The custom layers themselves convert either way (their ops: gather, flip, reshape, softmax,
reductions); the keypoint models, which have no such layer, export the same through both.

Each file is checked before it is kept: ONNX Runtime against Keras on test faces (the prepared
test split when it fits the model, else seeded synthetic faces) within ``KEYPOINT_ATOL_PX`` pixels
and ``PROBABILITY_ATOL``, and the test figures (RMSE, weighted F1, accuracy) must agree within
``FIGURE_ATOL`` (3 decimals). Then each file is logged as an artifact of the run that logged its
Keras version (``onnx/<task>-v<version>.onnx``), and the version is tagged with that URI and the
file's sha256 (``onnx_runtime.ONNX_TAG``, ``SHA256_TAG``): ``facelab predict --runtime onnx`` and
``facelab demo --runtime onnx`` find the champions' files by those tags.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facelab.atomic import atomic_path, write_json
from facelab.errors import FacelabError
from facelab.serve import onnx_runtime
from facelab.serve.analysis import resize_faces
from facelab.tracking import uris

OPSET = 17
KEYPOINT_ATOL_PX = 1e-3  # ONNX Runtime vs Keras, per coordinate (pixels of the model's input)
PROBABILITY_ATOL = 1e-4  # per class probability
FIGURE_ATOL = 5e-4  # test figures (RMSE px, weighted F1, accuracy) agree to 3 decimals
CHECK_FACES = 256  # test faces compared at export
OUT_DIR = Path("models") / "onnx"
ARTIFACT_DIR = "onnx"
TASKS = ("keypoints", "emotion")


def to_onnx(
    model, path: str | os.PathLike, task: str, metadata: dict[str, str] | None = None, opset: int = OPSET
) -> Path:
    """Write ``model`` (a Keras model of (N, H, W, 1) 0-255 pixels) as ONNX at ``path``, in inference mode.

    Input ``image`` and output ``keypoints`` / ``probabilities`` (``onnx_runtime.OUTPUT_NAMES``), both
    with a symbolic batch dimension ``batch``; ``metadata`` goes into the file's metadata properties.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    height, width, channels = (int(v) for v in model.input_shape[1:])
    spec = (tf.TensorSpec((None, height, width, channels), tf.float32, name=onnx_runtime.INPUT_NAME),)
    function = tf.function(lambda images: model(images, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset)
    _rename_output(proto.graph, onnx_runtime.OUTPUT_NAMES[task])
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    info = {
        onnx_runtime.META_TASK: task,
        onnx_runtime.META_INPUT_SIZE: f"{height}x{width}",
        "facelab.converter": f"tf2onnx {tf2onnx.__version__}, opset {opset}, training=False",
        **(metadata or {}),
    }
    del proto.metadata_props[:]
    for key, value in info.items():
        proto.metadata_props.add(key=key, value=str(value))
    proto.producer_name = "facelab"
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=onnx_runtime.SUFFIX) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def _rename_output(graph, name: str) -> None:
    old = graph.output[0].name
    if old == name:
        return
    for node in graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    graph.output[0].name = name


# --- checking ------------------------------------------------------------------------------------


def check_faces(task: str, size: int, count: int = CHECK_FACES) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 (N, size, size), their targets, where from): the prepared test split when its faces
    are ``size`` pixels, else seeded synthetic faces (keypoints, or FER label ids for emotion)."""
    from facelab.data import artifacts, synthetic

    path = artifacts.split_path(task, "test")
    if path.exists():
        split = artifacts.load_split(path)
        images = split["images"]
        if images.ndim == 3 and images.shape[1] == size and len(images):
            target = split["keypoints"] if task == "keypoints" else split["labels"]
            return images[:count], target[:count], f"{path} (first {min(count, len(images))})"
    if task == "keypoints":
        images, points = synthetic.make_keypoint_faces(count, seed=1)
        if size != images.shape[1]:
            scale = size / images.shape[1]
            images = resize_faces(images, size)
            points = (points + 0.5) * scale - 0.5
        return images, points, f"{count} synthetic faces (seed 1)"
    images, labels = synthetic.make_emotion_faces(count, seed=1, size=size)
    return images, labels, f"{count} synthetic faces (seed 1)"


def compare(model, path: str | os.PathLike, task: str, images: np.ndarray, targets: np.ndarray | None = None) -> dict:
    """ONNX Runtime against Keras on ``images``: the largest difference, and the test figures of both."""
    from facelab.nn import inference
    from facelab.reports import scoring

    keras_out = inference.predict(model, images)
    onnx_out = onnx_runtime.OnnxModel(path)(images)
    diff = float(np.abs(keras_out.astype(np.float64) - onnx_out).max()) if len(images) else 0.0
    report = {"faces": int(len(images)), "max_abs_diff": diff}
    if targets is not None and len(images):
        if task == "keypoints":
            report["keras_rmse_px"] = scoring.keypoint_rmse(targets, keras_out)
            report["onnx_rmse_px"] = scoring.keypoint_rmse(targets, onnx_out)
        else:
            labels = np.asarray(targets)
            classes = [str(i) for i in range(keras_out.shape[1])]
            valid = labels < keras_out.shape[1]  # synthetic FER ids beyond the model's classes: left out
            for runtime, out in (("keras", keras_out), ("onnx", onnx_out)):
                scores = scoring.emotion_scores(labels[valid], out[valid].argmax(1), classes)
                report[f"{runtime}_f1_weighted"] = scores["f1_weighted"]
                report[f"{runtime}_accuracy"] = scores["accuracy"]
            report["same_class"] = float(np.mean(keras_out.argmax(1) == onnx_out.argmax(1)))
    return report


def check(report: dict, task: str, name: str) -> None:
    """Raise when ONNX Runtime strays from Keras past the tolerances (a converter bug: nothing is logged)."""
    tolerance = KEYPOINT_ATOL_PX if task == "keypoints" else PROBABILITY_ATOL
    if report["max_abs_diff"] > tolerance:
        raise FacelabError(
            f"{name}: ONNX Runtime differs from Keras by {report['max_abs_diff']:.3g} "
            f"(tolerance {tolerance:g}) on {report['faces']} test faces: not exported"
        )
    for figure in ("rmse_px", "f1_weighted", "accuracy"):
        if f"keras_{figure}" in report and abs(report[f"keras_{figure}"] - report[f"onnx_{figure}"]) > FIGURE_ATOL:
            raise FacelabError(
                f"{name}: test {figure} {report[f'onnx_{figure}']:.4f} on ONNX Runtime, "
                f"{report[f'keras_{figure}']:.4f} on Keras: not exported"
            )


def export_model(model, path: str | os.PathLike, task: str, metadata: dict[str, str] | None = None) -> dict:
    """Convert, check on test faces, and describe one model (its file, size, sha256 and the comparison)."""
    path = to_onnx(model, path, task, metadata)
    size = int(model.input_shape[1])
    images, targets, source = check_faces(task, size)
    report = compare(model, path, task, images, targets)
    report["check_faces"] = source
    try:
        check(report, task, str(path))
    except FacelabError:
        path.unlink(missing_ok=True)
        raise
    return {
        "task": task,
        "file": str(path),
        "bytes": path.stat().st_size,
        "sha256": onnx_runtime.sha256(path),
        **report,
    }


# --- the champions ------------------------------------------------------------------------------


def export_champions(params: dict, out_dir: str | os.PathLike = OUT_DIR, log: bool = True) -> dict:
    """Export the two champion versions to ``out_dir`` (``keypoints.onnx``, ``emotion.onnx``, ``export.json``).

    With ``log``: each file goes to its version's run as ``onnx/<task>-v<version>.onnx`` and the
    version gets the tags ``facelab.onnx`` (that artifact's URI) and ``facelab.onnx_sha256``.
    """
    from facelab.nn import inference  # noqa: F401  (inference registers facelab's Keras layers)
    from facelab.tracking import store

    names = params["tracking"]
    store.connect(names["experiment"])
    out_dir = Path(out_dir)
    exported = {}
    for task in TASKS:
        name = names[f"{task}_model"]
        version = store.champion_version(name)
        if version is None:
            raise FacelabError(f"{uris.alias_uri(name)}: no champion yet (run the pipeline: dvc repro)")
        uri = uris.version_uri(name, version.version)  # this version, even if the alias moves meanwhile
        try:
            model = store.load_keras(uri)
        except Exception as exc:  # MLflow's errors: the version's files are gone, the store is unreachable
            raise FacelabError(f"{uri}: cannot load the model: {str(exc).strip().splitlines()[0]}") from None
        metadata = {onnx_runtime.META_SOURCE: uri}
        if task == "emotion":
            classes = dict(version.tags).get("classes")
            if not classes:
                raise FacelabError(f"{uri}: the model version has no 'classes' tag")
            metadata[onnx_runtime.META_CLASSES] = classes
        info = export_model(model, out_dir / f"{task}{onnx_runtime.SUFFIX}", task, metadata)
        info.update(model=uri, keras_bytes=_keras_bytes(model))
        if log:
            info["artifact"] = _log_beside(version, Path(info["file"]), task, info["sha256"])
        exported[task] = info
    write_json(out_dir / "export.json", exported)
    return exported


def _keras_bytes(model) -> int | None:
    """The size of the model as a ``.keras`` file (saved to a temporary file)."""
    with tempfile.TemporaryDirectory(prefix="facelab-keras-size-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.stat().st_size


def _log_beside(version, path: Path, task: str, digest: str) -> str:
    """Log ``path`` to the run that logged ``version`` and tag the version with the artifact's URI."""
    from facelab.tracking import store

    if not version.run_id:
        raise FacelabError(
            f"{uris.version_uri(version.name, version.version)}: the version has no run to log the ONNX file in"
        )
    artifact = f"{task}-v{version.version}{onnx_runtime.SUFFIX}"
    with tempfile.TemporaryDirectory(prefix="facelab-onnx-log-") as tmp:  # the artifact's own file name
        named = Path(tmp) / artifact
        shutil.copyfile(path, named)
        store.log_artifact_to_run(version.run_id, named, ARTIFACT_DIR)
    uri = f"runs:/{version.run_id}/{ARTIFACT_DIR}/{artifact}"
    store.tag_version(version.name, int(version.version), {onnx_runtime.ONNX_TAG: uri, onnx_runtime.SHA256_TAG: digest})
    return uri


def export_files(
    keypoints_model: str, emotion_model: str, out_dir: str | os.PathLike, classes: Sequence[str] | None = None
) -> dict:
    """Export two local ``.keras`` files (no registry, nothing logged): benchmarks and tests."""
    from facelab.nn import inference

    out_dir = Path(out_dir)
    exported = {}
    for task, source in (("keypoints", keypoints_model), ("emotion", emotion_model)):
        model = inference.load_model(source)
        metadata = {onnx_runtime.META_SOURCE: str(source)}
        if task == "emotion" and classes:
            metadata[onnx_runtime.META_CLASSES] = ",".join(classes)
        info = export_model(model, out_dir / f"{task}{onnx_runtime.SUFFIX}", task, metadata)
        info.update(model=str(source), keras_bytes=Path(source).stat().st_size)
        exported[task] = info
    write_json(out_dir / "export.json", exported)
    return exported


def summary(exported: dict) -> str:
    """One line per exported model, for the command line."""
    lines = []
    for task, info in exported.items():
        tolerance = KEYPOINT_ATOL_PX if task == "keypoints" else PROBABILITY_ATOL
        figures = ", ".join(
            f"{f} {info[f'keras_{f}']:.4f}/{info[f'onnx_{f}']:.4f}"
            for f in ("rmse_px", "f1_weighted", "accuracy")
            if f"keras_{f}" in info
        )
        lines.append(
            f"{task}: {info['model']} -> {info['file']} ({info['bytes'] / 1e6:.1f} MB; .keras "
            f"{(info.get('keras_bytes') or 0) / 1e6:.1f} MB); max |ONNX - Keras| {info['max_abs_diff']:.2g} "
            f"<= {tolerance:g} on {info['check_faces']}; Keras/ONNX {figures}"
            + (f"; logged as {info['artifact']}" if info.get("artifact") else "")
        )
    return "\n".join(lines)
