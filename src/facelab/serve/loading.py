"""Loading the face analyser ``facelab predict`` and ``facelab demo`` run, once, before any photo.

By default the registry's ``champion`` versions named in ``params``' ``tracking:``; either model may be
replaced by an MLflow model URI or a local file. ``runtime`` picks how the models run: ``keras``
(``facelab.serve.keras_runtime.FaceAnalyzer``, loaded here) or ``onnx`` (ONNX Runtime on the files
``facelab export onnx`` wrote: ``facelab.serve.onnx_runtime.load_onnx_analyzer``).

Nothing here imports TensorFlow until a Keras model is loaded: ``--runtime onnx`` runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from facelab.errors import FacelabError
from facelab.tracking import uris

if TYPE_CHECKING:  # import TensorFlow: only the Keras runtime does, when it loads its models
    from facelab.serve.analysis import FaceAnalysis
    from facelab.serve.keras_runtime import FaceAnalyzer

KERAS_SUFFIX = ".keras"
RUNTIMES = ("keras", "onnx")


def load_analyzer(
    params: dict,
    keypoints_model: str | None = None,
    emotion_model: str | None = None,
    classes: Sequence[str] | None = None,
    runtime: str = "keras",
) -> FaceAnalysis:
    """The analyser on ``runtime`` (one of ``RUNTIMES``): ``load_keras_analyzer`` or ONNX Runtime's twin."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "onnx":
        from facelab.serve.onnx_runtime import load_onnx_analyzer

        return load_onnx_analyzer(params, keypoints_model, emotion_model, classes)
    return load_keras_analyzer(params, keypoints_model, emotion_model, classes)


def load_keras_analyzer(
    params: dict,
    keypoints_model: str | None = None,
    emotion_model: str | None = None,
    classes: Sequence[str] | None = None,
) -> FaceAnalyzer:
    """The two Keras models: by default the registry's ``champion`` versions named in ``params``' ``tracking:``.

    ``keypoints_model`` / ``emotion_model`` replace either with an MLflow model URI or a local
    ``.keras`` file; a given emotion model's classes are ``classes``, else ``data.emotion.classes``.
    (``onnx_runtime.load_onnx_analyzer`` is the same on ONNX Runtime.)
    """
    from facelab.serve.keras_runtime import FaceAnalyzer
    from facelab.tracking import registry, store

    names = params["tracking"]
    if not all(uris.is_local(uri, KERAS_SUFFIX) for uri in (keypoints_model, emotion_model)):
        store.connect(names["experiment"])
    keypoints = _load_model(keypoints_model or uris.alias_uri(names["keypoints_model"]))
    if emotion_model is None:
        uri = uris.alias_uri(names["emotion_model"])
        emotion = _load_model(uri)
        if classes is None:
            try:
                classes = registry.version_tags(names["emotion_model"])["classes"].split(",")
            except KeyError:
                raise FacelabError(f"{uri}: the model version has no 'classes' tag: pass --classes") from None
    else:
        emotion = _load_model(emotion_model)
    classes = list(classes) if classes is not None else list(params["data"]["emotion"]["classes"])
    outputs = int(emotion.output_shape[-1])
    if outputs != len(classes):
        raise FacelabError(
            f"{emotion_model or uri}: the emotion model has {outputs} outputs but {len(classes)} "
            f"classes were given ({','.join(classes)})"
        )
    return FaceAnalyzer(keypoints, emotion, classes)


def _load_model(uri: str):
    from facelab.nn import inference
    from facelab.tracking import registry, store

    if uris.is_local(uri, KERAS_SUFFIX):
        if not Path(uri).is_file():
            raise FacelabError(f"{uri}: no such model file")
        try:
            return inference.load_model(uri)
        except Exception as exc:  # Keras raises many types for a file that is not a model
            raise FacelabError(f"{uri}: cannot load the Keras model: {_first_line(exc)}") from None
    try:
        return registry.load_keras(uri)
    except Exception as exc:  # MLflow's errors: no such model or alias, unreachable store
        raise FacelabError(f"{uri}: cannot load the model from {store.tracking_uri()}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
