"""ONNX export: the files answer what the Keras models answer, carry what a runtime needs, are logged beside
the Keras versions, and run without TensorFlow.

The models are tiny and untrained but shaped like the real recipes' (the soft-argmax keypoint head, an
emotion model that crops its input, both wrapped in their test-time averaging with the mirror image
and four 2-pixel shifts), with BatchNorm statistics set away from 0/1 as training leaves them: what
is checked is the conversion, not the models. They are built in each precision a training stage can
train in (float32, mixed_bfloat16, mixed_float16): the graph computes in float32 whichever. The
pipeline's own models (models/*.keras after `dvc repro`) are exported too when the workspace has them.

Without the ONNX extra these tests skip, unless ``FACELAB_REQUIRE_ONNX`` is set, as ``.ci/run`` does:
there a missing extra fails.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REQUIRE_ENV = "FACELAB_REQUIRE_ONNX"
for _module in ("onnxruntime", "onnx", "tf2onnx"):
    try:
        importlib.import_module(_module)
    except ImportError as _exc:
        _reason = f"{_exc.name} is not installed (the ONNX extra): pip install -e '.[onnx]'"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{_reason} ({REQUIRE_ENV} is set: these tests must run here)", pytrace=False)
        pytest.skip(_reason, allow_module_level=True)

from facelab.data import synthetic  # noqa: E402
from facelab.nn import inference  # noqa: E402
from facelab.serve import onnx_export, onnx_runtime  # noqa: E402
from facelab.serve.keras_runtime import FaceAnalyzer  # noqa: E402
from tests.support.photos import two_faces_photo  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["anger", "disgust", "sadness", "happiness", "surprise"]
KEYPOINTS, EMOTION = "facelab-keypoints-onnx-test", "facelab-emotion-onnx-test"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")  # what params.yaml's precision can resolve to
TASKS = ("keypoints", "emotion")


def _models(policy: str = "float32"):
    """The two models, built under the dtype policy ``policy`` (Keras's global policy is set back afterwards)."""
    import keras

    from facelab.nn import tta
    from facelab.nn.resnet import build_emotion_model, build_keypoint_model

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        keypoints = build_keypoint_model(96, width=16, head="softargmax")
        emotion = build_emotion_model(len(CLASSES), width=16, stem="stride2", crop=40, dropout=0.3)
    finally:
        keras.mixed_precision.set_global_policy(before)
    rng = np.random.default_rng(0)
    for model in (keypoints, emotion):
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_mean.assign(rng.normal(0, 0.2, layer.moving_mean.shape))
                layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    return (
        tta.wrap(keypoints, "keypoints", flip=True, shift_px=2),
        tta.wrap(emotion, "emotion", flip=True, shift_px=2),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The two models saved as .keras files (reloaded, as a champion is) and exported with export_files."""
    folder = tmp_path_factory.mktemp("onnx")
    keypoints, emotion = _models()
    keypoints.save(folder / "keypoints.keras")
    emotion.save(folder / "emotion.keras")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # no data/prepared here: checked on synthetic faces, whatever the workspace holds
        info = onnx_export.export_files(folder / "keypoints.keras", folder / "emotion.keras", folder / "onnx", CLASSES)
    return {
        "info": info,
        "keras": {task: inference.load_model(folder / f"{task}.keras") for task in ("keypoints", "emotion")},
        "onnx": {task: Path(info[task]["file"]) for task in ("keypoints", "emotion")},
        "folder": folder,
    }


def _test_faces(task: str, count: int = 64) -> np.ndarray:
    if task == "keypoints":
        faces = synthetic.make_keypoint_faces(count, seed=3)[0]
    else:
        faces = synthetic.make_emotion_faces(count, seed=3)[0]
    noise = np.random.default_rng(3).integers(0, 256, (8, *faces.shape[1:]), np.uint8)  # far from any face
    return np.concatenate([faces, noise])


@pytest.mark.parametrize("task", ["keypoints", "emotion"])
def test_onnx_runtime_answers_like_keras_on_test_faces(exported, task):
    faces = _test_faces(task)
    keras_out = inference.predict(exported["keras"][task], faces)
    model = onnx_runtime.OnnxModel(exported["onnx"][task])
    onnx_out = model(faces)
    tolerance = onnx_export.KEYPOINT_ATOL_PX if task == "keypoints" else onnx_export.PROBABILITY_ATOL
    assert onnx_out.shape == keras_out.shape and onnx_out.dtype == np.float32
    assert np.abs(onnx_out - keras_out).max() <= tolerance
    # one face at a time and 64 at once give the same answers (the batch dimension is free)
    one_by_one = np.concatenate([model(faces[i : i + 1]) for i in range(len(faces))])
    assert np.abs(one_by_one - onnx_out).max() <= tolerance
    if task == "emotion":
        assert np.array_equal(onnx_out.argmax(1), keras_out.argmax(1))
        assert np.allclose(onnx_out.sum(1), 1, atol=1e-5)


def test_the_test_figures_agree_to_3_decimals(exported):
    info = exported["info"]
    for task, figures in (("keypoints", ["rmse_px"]), ("emotion", ["f1_weighted", "accuracy"])):
        assert info[task]["faces"] == onnx_export.CHECK_FACES
        for figure in figures:
            keras_value, onnx_value = info[task][f"keras_{figure}"], info[task][f"onnx_{figure}"]
            assert abs(keras_value - onnx_value) <= onnx_export.FIGURE_ATOL, (task, figure, keras_value, onnx_value)
            assert f"{keras_value:.3f}" == f"{onnx_value:.3f}", (task, figure)
    assert info["emotion"]["same_class"] == 1.0


def test_the_check_uses_the_prepared_test_split_when_it_fits(tmp_path, monkeypatch):
    from facelab.data import artifacts

    monkeypatch.chdir(tmp_path)
    images, points = synthetic.make_keypoint_faces(5, seed=7)
    artifacts.save_split(artifacts.split_path("keypoints", "test"), images=images, keypoints=points)
    faces, targets, source = onnx_export.check_faces("keypoints", 96)
    assert np.array_equal(faces, images) and np.array_equal(targets, points)
    assert source == "data/prepared/keypoints_test.npz (first 5)"
    faces, _, source = onnx_export.check_faces("keypoints", 64)  # another input size: synthetic faces, resized
    assert faces.shape == (onnx_export.CHECK_FACES, 64, 64) and source.endswith("synthetic faces (seed 1)")


def test_the_files_carry_what_a_runtime_needs(exported):
    import onnx

    for task, size, outputs in (("keypoints", 96, 30), ("emotion", 48, len(CLASSES))):
        proto = onnx.load(str(exported["onnx"][task]))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta[onnx_runtime.META_TASK] == task
        assert meta[onnx_runtime.META_INPUT_SIZE] == f"{size}x{size}"
        assert "tf2onnx" in meta["facelab.converter"] and "training=False" in meta["facelab.converter"]
        [graph_input], [graph_output] = proto.graph.input, proto.graph.output
        assert graph_input.name == "image" and graph_output.name == onnx_runtime.OUTPUT_NAMES[task]
        dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        assert dims == ["batch", size, size, 1]
        assert [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim] == ["batch", outputs]
        assert exported["info"][task]["bytes"] == exported["onnx"][task].stat().st_size
    meta = {p.key: p.value for p in onnx.load(str(exported["onnx"]["emotion"])).metadata_props}
    assert meta[onnx_runtime.META_CLASSES] == ",".join(CLASSES)
    saved = json.loads((exported["folder"] / "onnx" / "export.json").read_text())
    assert saved["emotion"]["sha256"] == onnx_runtime.sha256(exported["onnx"]["emotion"])


def test_why_the_export_passes_training_false(exported):
    """A model with Keras preprocessing layers (CenterCrop, Resizing: `call(..., training=True)`) called without
    `training=False` runs its BatchNorms on the batch's statistics (and moves their moving averages): what
    Keras's own `model.export(..., format="onnx")` traces. The export traces `model(x, training=False)`."""
    emotion = inference.load_model(exported["folder"] / "emotion.keras")  # a copy: the call below changes it
    faces = _test_faces("emotion", 16)[..., None].astype(np.float32)
    inference_mode = np.asarray(emotion(faces, training=False))
    assert np.abs(onnx_runtime.OnnxModel(exported["onnx"]["emotion"])(faces) - inference_mode).max() <= 1e-4
    untold = np.asarray(emotion(faces))
    assert np.abs(untold - inference_mode).max() > 1e-2


def test_a_converter_that_strays_is_refused(exported, tmp_path, monkeypatch):
    from facelab.errors import FacelabError

    monkeypatch.chdir(tmp_path)

    real = onnx_runtime.OnnxModel.__call__
    monkeypatch.setattr(onnx_runtime.OnnxModel, "__call__", lambda self, images: real(self, images) + 2e-3)
    with pytest.raises(
        FacelabError,
        match=r"ONNX Runtime differs from Keras by 0\.002\d* \(tolerance 0\.001\) on 256 test faces: not exported",
    ):
        onnx_export.export_model(exported["keras"]["keypoints"], tmp_path / "kp.onnx", "keypoints")
    assert not (tmp_path / "kp.onnx").exists()


# --- precisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_a_model_of_any_precision_exports_a_float32_graph_that_answers_like_keras(
    exported, policy, tmp_path, monkeypatch
):
    """tf2onnx on a mixed-precision model writes a graph ONNX Runtime cannot load (a Mul bound to float16 and
    bfloat16): the export converts the model rebuilt in float32 with the same weights, checks ONNX Runtime
    against that Keras model, reports the difference from the model as trained, and says both in the file."""
    import keras
    import onnx

    before = keras.mixed_precision.global_policy().name
    for task, model in zip(TASKS, _models(policy)):
        model.save(tmp_path / f"{task}.keras")
    assert keras.mixed_precision.global_policy().name == before
    monkeypatch.chdir(tmp_path)  # no data/prepared here: checked on synthetic faces
    info = onnx_export.export_files(
        tmp_path / "keypoints.keras", tmp_path / "emotion.keras", tmp_path / "onnx", CLASSES
    )
    for task in TASKS:
        trained = inference.load_model(tmp_path / f"{task}.keras")
        assert inference.precision(trained) == policy
        twin = onnx_export.float32_model(trained)
        assert (twin is trained) == (policy == "float32") and inference.precision(twin) == "float32"
        assert all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), twin.get_weights()))

        proto = onnx.load(info[task]["file"])
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta[onnx_runtime.META_TRAINED_PRECISION] == policy
        assert meta[onnx_runtime.META_GRAPH_PRECISION] == "float32"
        assert onnx_export.graph_float_types(proto) == {"FLOAT"}
        assert (info[task]["trained_precision"], info[task]["graph_precision"]) == (policy, "float32")

        faces = _test_faces(task)
        tolerance = onnx_export.KEYPOINT_ATOL_PX if task == "keypoints" else onnx_export.PROBABILITY_ATOL
        onnx_out = onnx_runtime.OnnxModel(info[task]["file"])(faces)
        assert np.abs(onnx_out - inference.predict(twin, faces)).max() <= tolerance
        # the same seed gives the same float32 weights under every policy: the twin is the float32 model itself
        assert np.abs(onnx_out - inference.predict(exported["keras"][task], faces)).max() <= tolerance
        if policy == "float32":
            assert "trained_max_abs_diff" not in info[task]
        else:  # 16-bit arithmetic: reported, not checked (it is not the converter's difference)
            assert info[task]["max_abs_diff"] < info[task]["trained_max_abs_diff"] < np.inf
            assert f"trained in {policy}, graph float32" in onnx_export.summary(info)


def test_the_pipeline_s_default_precision_is_one_of_those():
    from facelab.config import load_params
    from facelab.nn.precision import resolve_precision

    params = load_params(REPO / "params.yaml")
    for stage in ("train_keypoints", "train_emotion"):
        assert resolve_precision(params[stage]["precision"]) in POLICIES


def _pipeline_models(tmp_path) -> Path:
    """The project whose models/*.keras to export: this checkout where `dvc repro` has run; else (a fresh clone,
    CI) a project copy where the pipeline's training stages run on the tiny profile's faces at params.yaml's own
    precision (`auto`: mixed_bfloat16 on a CPU with bf16 instructions), not the profile's float32."""
    if all((REPO / "models" / f"{task}.keras").exists() for task in TASKS):
        return REPO
    from facelab.sandbox import make_project_copy, run

    path, env = make_project_copy(tmp_path / "repo")
    own_precision = tmp_path / "own-precision.yaml"
    own_precision.write_text(json.dumps({s: {"precision": "auto"} for s in ("train_keypoints", "train_emotion")}))
    run([sys.executable, "-m", "facelab.cli", "params", "apply", str(own_precision)], path, env)
    run(["dvc", "repro", "train_keypoints", "train_emotion"], path, env)
    return path


def test_the_pipeline_s_own_models_export_and_pass_the_check(tmp_path, monkeypatch):
    """models/*.keras as the pipeline's training stages leave them at params.yaml's `precision: auto`, checked on
    the prepared test split."""
    from facelab.config import load_params

    project = _pipeline_models(tmp_path)
    files = [project / "models" / f"{task}.keras" for task in TASKS]
    classes = load_params(project / "params.yaml")["data"]["emotion"]["classes"]
    monkeypatch.chdir(project)  # the prepared test split, read only; the files go to tmp_path
    info = onnx_export.export_files(*files, tmp_path, classes)
    print(onnx_export.summary(info))
    for task in TASKS:
        trained = info[task]["trained_precision"]
        assert trained in POLICIES and info[task]["graph_precision"] == "float32"
        tolerance = onnx_export.KEYPOINT_ATOL_PX if task == "keypoints" else onnx_export.PROBABILITY_ATOL
        assert info[task]["max_abs_diff"] <= tolerance
        assert ("trained_max_abs_diff" in info[task]) == (trained != "float32")


def test_the_onnx_analyser_answers_like_the_keras_one(exported):
    keras_analyser = FaceAnalyzer(exported["keras"]["keypoints"], exported["keras"]["emotion"], CLASSES)
    onnx_analyser = onnx_runtime.OnnxFaceAnalyzer(exported["onnx"]["keypoints"], exported["onnx"]["emotion"])
    assert onnx_analyser.classes == CLASSES  # from the file
    assert (onnx_analyser.keypoint_size, onnx_analyser.emotion_size) == (96, 48)
    faces = np.stack([np.pad(f, 12, mode="edge") for f in synthetic.make_keypoint_faces(6, seed=4)[0]])  # 120 px
    scale = 120 / 96
    assert np.abs(onnx_analyser.keypoints(faces) - keras_analyser.keypoints(faces)).max() <= 1e-3 * scale
    assert np.abs(onnx_analyser.probabilities(faces) - keras_analyser.probabilities(faces)).max() <= 1e-4
    for ours, theirs in zip(onnx_analyser.analyse(faces), keras_analyser.analyse(faces)):
        assert list(ours) == list(theirs) and list(ours["keypoints"]) == list(theirs["keypoints"])
        assert ours["emotion"] == theirs["emotion"]
        assert np.allclose(list(ours["keypoints"].values()), list(theirs["keypoints"].values()), atol=0.011)
        assert np.allclose(list(ours["probabilities"].values()), list(theirs["probabilities"].values()), atol=2e-4)


def test_the_demo_page_runs_on_the_onnx_analyser(exported, tmp_path):
    from facelab.serve import demo

    photo = two_faces_photo(tmp_path / "two-faces.jpg")
    payload = {"path": str(photo), "orig_name": "two-faces.jpg"}
    onnx_analyser = onnx_runtime.OnnxFaceAnalyzer(exported["onnx"]["keypoints"], exported["onnx"]["emotion"])
    keras_analyser = FaceAnalyzer(exported["keras"]["keypoints"], exported["keras"]["emotion"], CLASSES)
    picture, status, table, record = demo.respond(onnx_analyser, payload)
    _, _, keras_table, keras_record = demo.respond(keras_analyser, payload)
    assert picture.shape == (480, 720, 3) and status.startswith("**2 faces** in two-faces.jpg")
    assert table["emotion"].tolist() == keras_table["emotion"].tolist()
    assert np.allclose(table[CLASSES].to_numpy(float), keras_table[CLASSES].to_numpy(float), atol=2e-4)
    assert [f["box"] for f in record["faces"]] == [f["box"] for f in keras_record["faces"]]


def test_wrong_classes_and_bad_files_are_one_line(exported, tmp_path):
    from facelab.errors import FacelabError

    with pytest.raises(FacelabError, match="the emotion model has 5 outputs but 2 classes"):
        onnx_runtime.OnnxFaceAnalyzer(exported["onnx"]["keypoints"], exported["onnx"]["emotion"], ["a", "b"])
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(FacelabError, match=r"broken\.onnx: cannot load the ONNX model"):
        onnx_runtime.OnnxModel(tmp_path / "broken.onnx")


NO_TENSORFLOW = """
import json, sys
{body}
loaded = sorted(m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules)
print(json.dumps({{"loaded": loaded, "result": result}}))
"""


def _run_python(body: str, cwd: Path) -> dict:
    code = NO_TENSORFLOW.format(body=textwrap.dedent(body))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_onnx_analyser_runs_without_tensorflow(exported, tmp_path):
    photo = two_faces_photo(tmp_path / "two-faces.jpg")
    body = f"""
    from facelab.serve import onnx_runtime, photos
    files = {str(exported["onnx"]["keypoints"])!r}, {str(exported["onnx"]["emotion"])!r}
    analyser = onnx_runtime.OnnxFaceAnalyzer(*files)
    gray = photos.read_photo({str(photo)!r})
    crops = [photos.crop_face(gray, box, analyser.keypoint_size)[0] for box in photos.detect_faces(gray)]
    import numpy as np
    result = analyser.analyse(np.stack(crops))
    """
    answer = _run_python(body, tmp_path)
    assert answer["loaded"] == []
    from facelab.serve import photos

    gray = photos.read_photo(photo)
    crops = np.stack([photos.crop_face(gray, box, 96)[0] for box in photos.detect_faces(gray)])
    expected = FaceAnalyzer(exported["keras"]["keypoints"], exported["keras"]["emotion"], CLASSES).analyse(crops)
    assert len(answer["result"]) == len(expected) == 2
    for ours, theirs in zip(answer["result"], expected):
        assert ours["emotion"] == theirs["emotion"]
        assert np.allclose(list(ours["probabilities"].values()), list(theirs["probabilities"].values()), atol=2e-4)


def test_predict_with_the_onnx_runtime_imports_no_tensorflow(exported, tmp_path):
    """`facelab predict --runtime onnx`: the whole command (photos, detection, batching, drawing) on ONNX Runtime."""
    photo = two_faces_photo(tmp_path / "two-faces.jpg")
    argv = [
        "predict",
        str(photo),
        "--runtime",
        "onnx",
        "--keypoints-model",
        str(exported["onnx"]["keypoints"]),
        "--emotion-model",
        str(exported["onnx"]["emotion"]),
        "--out",
        str(tmp_path / "out"),
        "--params",
        str(REPO / "params.yaml"),
        "--json",
    ]
    body = f"""
    import contextlib, io
    from facelab import cli
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main({argv!r})
    result = {{"code": code, "records": json.loads(printed.getvalue())}}
    """
    answer = _run_python(body, tmp_path)
    assert answer["loaded"] == [], "facelab predict --runtime onnx imported " + ", ".join(answer["loaded"])
    assert answer["result"]["code"] == 0
    [record] = answer["result"]["records"]
    assert len(record["faces"]) == 2 and all(face["emotion"] in CLASSES for face in record["faces"])
    assert (tmp_path / "out" / "two-faces.annotated.jpg").exists()


# --- the registry ------------------------------------------------------------------------------


@pytest.fixture
def registry(mlflow_store):
    """A SQLite store in tmp_path with the two models registered, champions, as the training stages leave them."""
    from facelab.config import load_params
    from facelab.tracking import store
    from facelab.tracking.registry import log_and_register_keras, set_alias
    from facelab.tracking.uris import CHAMPION

    params = load_params(REPO / "params.yaml")
    params["tracking"] = {**params["tracking"], "experiment": "facelab-onnx-test"}
    params["tracking"].update(keypoints_model=KEYPOINTS, emotion_model=EMOTION)
    keypoints, emotion = _models()
    with store.stage_run("train", {}, "facelab-onnx-test"):
        kp = log_and_register_keras(keypoints, KEYPOINTS, np.zeros((1, 96, 96, 1), np.float32))
        em = log_and_register_keras(
            emotion, EMOTION, np.zeros((1, 48, 48, 1), np.float32), tags={"classes": ",".join(CLASSES)}
        )
    set_alias(KEYPOINTS, CHAMPION, kp["version"])
    set_alias(EMOTION, CHAMPION, em["version"])
    return params, kp, em


def test_export_logs_each_file_beside_its_keras_version(registry, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from facelab.errors import FacelabError

    params, kp, em = registry
    info = onnx_export.export_champions(params, tmp_path / "exported")
    client = MlflowClient()
    for task, registered in (("keypoints", kp), ("emotion", em)):
        tags = client.get_model_version(registered["name"], str(registered["version"])).tags
        uri = f"runs:/{registered['run_id']}/onnx/{task}-v{registered['version']}.onnx"
        assert info[task]["artifact"] == tags[onnx_runtime.ONNX_TAG] == uri
        assert info[task]["model"] == f"models:/{registered['name']}/{registered['version']}"
        assert tags[onnx_runtime.SHA256_TAG] == info[task]["sha256"]
        downloaded = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "dl" / task))
        assert onnx_runtime.sha256(downloaded) == info[task]["sha256"]
        assert info[task]["max_abs_diff"] <= 1e-3
    assert "synthetic faces" in info["keypoints"]["check_faces"]  # no prepared test split here
    assert "logged as runs:/" in onnx_export.summary(info)

    # facelab predict --runtime onnx's loader: the champions' files by default, or a version by URI
    analyser = onnx_runtime.load_onnx_analyzer(params)
    assert analyser.classes == CLASSES and analyser.keypoint_size == 96
    faces = synthetic.make_keypoint_faces(4, seed=5)[0]
    local = onnx_runtime.OnnxFaceAnalyzer(info["keypoints"]["file"], info["emotion"]["file"])
    assert np.array_equal(analyser.keypoints(faces), local.keypoints(faces))
    by_version = onnx_runtime.load_onnx_analyzer(params, f"models:/{KEYPOINTS}/{kp['version']}")
    assert np.array_equal(by_version.probabilities(faces), local.probabilities(faces))

    # a version that was never exported says what to run
    from facelab.tracking import store
    from facelab.tracking.registry import load_keras, log_and_register_keras

    with store.stage_run("train", {}, "facelab-onnx-test"):
        again = log_and_register_keras(
            load_keras(f"models:/{KEYPOINTS}/{kp['version']}"), KEYPOINTS, np.zeros((1, 96, 96, 1), np.float32)
        )
    with pytest.raises(FacelabError, match=r"has no ONNX file yet: run `facelab export onnx`"):
        onnx_runtime.load_onnx_analyzer(params, f"models:/{KEYPOINTS}/{again['version']}")
