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

The graph computes in float32 whatever precision the model was trained in (``precision: auto`` trains in
``mixed_bfloat16`` on a CPU with bf16 instructions and ``mixed_float16`` on a GPU). tf2onnx on a
mixed-precision model writes a graph that ONNX Runtime refuses to load (a Mul bound to float16 and
bfloat16, a Min to float16 and float), so ``float32_model`` first rebuilds the same architecture from
the model's own config under the float32 dtype policy and copies its weights (float32 already: a mixed
policy keeps its variables in float32, and computes in 16 bits). Every tensor of the written graph is
float32 (checked by ONNX shape inference: ``graph_float_types``); the file's metadata names the precision
the model was trained in and the graph's (``onnx_runtime.META_TRAINED_PRECISION``,
``META_GRAPH_PRECISION``).

Each file is checked before it is kept: ONNX Runtime against Keras computing in float32 with the same
weights (the model itself when it was trained in float32), on test faces (the prepared test split when
it fits the model, else seeded synthetic faces), within ``KEYPOINT_ATOL_PX`` pixels and
``PROBABILITY_ATOL``, and the test figures (RMSE, weighted F1, accuracy) must agree within
``FIGURE_ATOL`` (3 decimals). For a mixed-precision model the difference from the model as trained
(``trained_max_abs_diff``) and its figures (``trained_*``) are reported beside them, not checked: 16-bit
arithmetic is what differs there, not the converter. Then each file is logged as an artifact of the run that logged its
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
FLOAT32 = "float32"  # the dtype policy the exported graph computes in
KEYPOINT_ATOL_PX = 1e-3  # ONNX Runtime vs Keras, per coordinate (pixels of the model's input)
PROBABILITY_ATOL = 1e-4  # per class probability
FIGURE_ATOL = 5e-4  # test figures (RMSE px, weighted F1, accuracy) agree to 3 decimals
CHECK_FACES = 256  # test faces compared at export
OUT_DIR = Path("models") / "onnx"
ARTIFACT_DIR = "onnx"
TASKS = ("keypoints", "emotion")


def float32_model(model):
    """``model`` computing in float32: itself when every layer already does, else its twin in float32.

    The twin is the same architecture rebuilt from ``model``'s own config with every dtype policy set to
    float32, holding ``model``'s weights cast to float32 (variable by variable, matched by path).
    """
    import keras

    from facelab.nn.resnet import all_layers

    if all(layer.dtype_policy.compute_dtype == FLOAT32 for layer in all_layers(model)):
        return model
    twin = keras.saving.deserialize_keras_object(
        _float32_policies(keras.saving.serialize_keras_object(model)), safe_mode=True
    )
    sources, targets = model.weights, twin.weights
    if [(w.path, tuple(w.shape)) for w in sources] != [(w.path, tuple(w.shape)) for w in targets]:
        raise FacelabError(f"{model.name}: rebuilt in float32, its weights no longer match the model's")
    for source, target in zip(sources, targets):
        target.assign(keras.ops.convert_to_numpy(source).astype(np.float32))
    left = sorted({layer.dtype_policy.name for layer in all_layers(twin)} - {FLOAT32})
    if left:
        raise FacelabError(f"{model.name}: rebuilt in float32, layers still compute in {', '.join(left)}")
    return twin


def _float32_policies(config):
    """``config`` (a serialised Keras object) with every dtype policy's name replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            return {**config, "config": {**config["config"], "name": FLOAT32}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def graph_float_types(proto) -> set[str]:
    """The floating-point element types (``FLOAT``, ``FLOAT16``, ``BFLOAT16``, ``DOUBLE``) of every tensor
    of the ONNX model ``proto``: inputs, outputs, weights, constants, casts and, by ONNX shape inference,
    every intermediate value."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    graph = onnx.shape_inference.infer_shapes(proto).graph
    types = {tensor.data_type for tensor in graph.initializer}
    types |= {value.type.tensor_type.elem_type for value in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to":
                types.add(attribute.i)
            if attribute.type == onnx.AttributeProto.TENSOR:
                types.add(attribute.t.data_type)
    return {onnx.TensorProto.DataType.Name(t) for t in types & floats}


def to_onnx(
    model, path: str | os.PathLike, task: str, metadata: dict[str, str] | None = None, opset: int = OPSET
) -> Path:
    """Write ``model`` (a Keras model of (N, H, W, 1) 0-255 pixels) as ONNX at ``path``, in inference mode.

    Input ``image`` and output ``keypoints`` / ``probabilities`` (``onnx_runtime.OUTPUT_NAMES``), both
    with a symbolic batch dimension ``batch``; ``metadata`` goes into the file's metadata properties.
    The graph computes in float32 (a mixed-precision ``model`` is converted as ``float32_model(model)``);
    the metadata names the precision ``model`` was trained in unless ``metadata`` does.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    from facelab.nn import inference

    trained = inference.precision(model)
    model = float32_model(model)
    height, width, channels = (int(v) for v in model.input_shape[1:])
    spec = (tf.TensorSpec((None, height, width, channels), tf.float32, name=onnx_runtime.INPUT_NAME),)
    function = tf.function(lambda images: model(images, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset)
    _rename_output(proto.graph, onnx_runtime.OUTPUT_NAMES[task])
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    types = graph_float_types(proto)
    if types != {"FLOAT"}:
        raise FacelabError(f"{path}: the ONNX graph holds {', '.join(sorted(types))} tensors, not float32 alone")
    info = {
        onnx_runtime.META_TASK: task,
        onnx_runtime.META_INPUT_SIZE: f"{height}x{width}",
        "facelab.converter": f"tf2onnx {tf2onnx.__version__}, opset {opset}, training=False",
        onnx_runtime.META_TRAINED_PRECISION: trained,
        **(metadata or {}),
        onnx_runtime.META_GRAPH_PRECISION: FLOAT32,
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


def compare(
    model,
    path: str | os.PathLike,
    task: str,
    images: np.ndarray,
    targets: np.ndarray | None = None,
    trained=None,
) -> dict:
    """ONNX Runtime against Keras (``model``) on ``images``: the largest difference, and the test figures of both.

    ``trained``: the model as trained when ``model`` is its float32 twin (``float32_model``): its largest
    difference from ONNX Runtime (``trained_max_abs_diff``) and its figures (``trained_*``) are added.
    """
    from facelab.nn import inference
    from facelab.reports import scoring

    keras_out = inference.predict(model, images)
    onnx_out = onnx_runtime.OnnxModel(path)(images)
    outputs = {"keras": keras_out, "onnx": onnx_out}
    report = {"faces": int(len(images)), "max_abs_diff": _max_abs_diff(keras_out, onnx_out)}
    if trained is not None:
        outputs["trained"] = inference.predict(trained, images)
        report["trained_max_abs_diff"] = _max_abs_diff(outputs["trained"], onnx_out)
    if targets is not None and len(images):
        if task == "keypoints":
            for runtime, out in outputs.items():
                report[f"{runtime}_rmse_px"] = scoring.keypoint_rmse(targets, out)
        else:
            labels = np.asarray(targets)
            classes = [str(i) for i in range(keras_out.shape[1])]
            valid = labels < keras_out.shape[1]  # synthetic FER ids beyond the model's classes: left out
            for runtime, out in outputs.items():
                scores = scoring.emotion_scores(labels[valid], out[valid].argmax(1), classes)
                report[f"{runtime}_f1_weighted"] = scores["f1_weighted"]
                report[f"{runtime}_accuracy"] = scores["accuracy"]
            report["same_class"] = float(np.mean(keras_out.argmax(1) == onnx_out.argmax(1)))
    return report


def _max_abs_diff(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(expected.astype(np.float64) - got).max()) if len(got) else 0.0


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
    """Convert, check on test faces, and describe one model (its file, size, sha256, precisions and the comparison).

    The check runs Keras in float32 (``float32_model``) as the graph does; a model trained in another
    precision is compared too, reported only (``compare``'s ``trained``).
    """
    from facelab.nn import inference

    trained = inference.precision(model)
    twin = float32_model(model)
    path = to_onnx(twin, path, task, {onnx_runtime.META_TRAINED_PRECISION: trained, **(metadata or {})})
    size = int(model.input_shape[1])
    images, targets, source = check_faces(task, size)
    report = compare(twin, path, task, images, targets, trained=None if twin is model else model)
    report.update(check_faces=source, trained_precision=trained, graph_precision=FLOAT32)
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
    from facelab.tracking import registry, store

    names = params["tracking"]
    store.connect(names["experiment"])
    out_dir = Path(out_dir)
    exported = {}
    for task in TASKS:
        name = names[f"{task}_model"]
        version = registry.champion_version(name)
        if version is None:
            raise FacelabError(f"{uris.alias_uri(name)}: no champion yet (run the pipeline: dvc repro)")
        uri = uris.version_uri(name, version.version)  # this version, even if the alias moves meanwhile
        try:
            model = registry.load_keras(uri)
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
    from facelab.tracking import registry, store

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
    registry.tag_version(
        version.name, int(version.version), {onnx_runtime.ONNX_TAG: uri, onnx_runtime.SHA256_TAG: digest}
    )
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
        trained = info.get("trained_precision", FLOAT32)
        against_trained = ""
        if "trained_max_abs_diff" in info:
            trained_figures = ", ".join(
                f"{f} {info[f'trained_{f}']:.4f}"
                for f in ("rmse_px", "f1_weighted", "accuracy")
                if f"trained_{f}" in info
            )
            against_trained = (
                f"; vs Keras in {trained} (not checked): max |ONNX - Keras| {info['trained_max_abs_diff']:.2g}"
                + (f", {trained_figures}" if trained_figures else "")
            )
        lines.append(
            f"{task}: {info['model']} -> {info['file']} ({info['bytes'] / 1e6:.1f} MB; .keras "
            f"{(info.get('keras_bytes') or 0) / 1e6:.1f} MB); trained in {trained}, graph float32; "
            f"max |ONNX - Keras float32| {info['max_abs_diff']:.2g} <= {tolerance:g} on {info['check_faces']}; "
            f"Keras/ONNX {figures}{against_trained}"
            + (f"; logged as {info['artifact']}" if info.get("artifact") else "")
        )
    return "\n".join(lines)
