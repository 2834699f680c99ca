"""Benchmark: faces/s of the two models on Keras (TensorFlow) and on ONNX Runtime, and the size of each file.

    python benchmarks/bench_onnx.py [--repeats 7] [--keypoints-profile profiles/quick-keypoints.yaml]
        [--emotion-profile profiles/quick-emotion-7.yaml]
    python benchmarks/bench_onnx.py --keypoints-model keypoints.keras --emotion-model emotion.keras

The models are built as the profiles' training builds and saves them (ResNet-18 with the profile's width,
stem and head, wrapped in its test-time averaging: ``facelab.nn.tta``), untrained: the cost and the file
sizes do not depend on the weights' values. Or pass two saved ``.keras`` files (e.g. the champions).
Each is exported with ``facelab.serve.onnx_export`` (checked against Keras on test faces as
``facelab export onnx`` does) and both are timed on the same 96x96 face crops:

* Keras: ``FaceAnalyzer`` (``inference.predict``: the model's call in a cached ``tf.function``);
* ONNX Runtime: ``onnx_runtime.OnnxFaceAnalyzer`` (CPU provider, one thread per physical core, idle
  threads sleeping), and the same with ONNX Runtime's default spin-waiting threads (``spin=True``);

at batch 1 (one face per call: a request with one face) and batch 64 (64 faces per call: ``facelab
predict``'s batches). "both" is ``analyse`` (both models and the records), the number a photo's faces
cost after detection. Each figure is the best of ``--repeats`` runs after two warm-up runs (the median
beside it); the runtimes take turns within each run, so a change in the machine's load hits them alike.
Prints Markdown, with the machine and its load average at start and end: other work on the machine
slows every runtime, though not by the same factor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 64)


def profile_params(profile: str) -> dict:
    """``params.yaml`` with ``profile`` applied (as ``facelab params apply`` would), or as it is."""
    from facelab.config import load_params
    from facelab.profiles import applied_params

    return applied_params(REPO / profile, REPO / "params.yaml") if profile else load_params(REPO / "params.yaml")


def build_models(keypoints_profile: str, emotion_profile: str, folder: Path) -> tuple[Path, Path, list[str], str]:
    """The two models as the profiles' training saves them (untrained), as .keras files."""
    import keras

    from facelab.formats import EMOTION_IMAGE_SIZE, KEYPOINT_IMAGE_SIZE
    from facelab.nn import tta
    from facelab.nn.resnet import build_emotion_model_from, build_keypoint_model_from

    keras.utils.set_random_seed(0)
    kp = profile_params(keypoints_profile)["train_keypoints"]
    emotion_params = profile_params(emotion_profile)
    em = emotion_params["train_emotion"]
    classes = [str(c) for c in emotion_params["data"]["emotion"]["classes"]]
    keypoints = build_keypoint_model_from(kp, KEYPOINT_IMAGE_SIZE)
    emotion = build_emotion_model_from(em, len(classes), EMOTION_IMAGE_SIZE)
    keypoints = tta.wrap(keypoints, "keypoints", **kp["tta"])
    emotion = tta.wrap(emotion, "emotion", **em["tta"])
    paths = folder / "keypoints.keras", folder / "emotion.keras"
    keypoints.save(paths[0])
    emotion.save(paths[1])

    def describe(cfg: dict, extra: str) -> str:
        views = (2 if cfg["tta"]["flip"] else 1) * (5 if cfg["tta"]["shift_px"] else 1)
        return f"width {cfg['width']}, stem {cfg['stem']}, {extra}, {views} test-time views"

    em_extra = f"{len(classes)} classes, crop {em['crop']}"
    about = (
        f"keypoints as `{keypoints_profile or 'params.yaml'}` ({describe(kp, 'head ' + kp['head'])}); emotion as "
        f"`{emotion_profile or 'params.yaml'}` ({describe(em, em_extra)})"
    )
    return paths[0], paths[1], classes, about


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keypoints-profile", default="profiles/quick-keypoints.yaml")
    parser.add_argument("--emotion-profile", default="profiles/quick-emotion-7.yaml")
    parser.add_argument("--keypoints-model", help="a saved .keras keypoint model instead of a profile's")
    parser.add_argument("--emotion-model", help="a saved .keras emotion model instead of a profile's")
    parser.add_argument("--classes", help="the emotion model's classes, a,b,c (with --emotion-model)")
    args = parser.parse_args()

    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    from facelab.data import synthetic
    from facelab.nn import inference
    from facelab.serve import onnx_export, onnx_runtime
    from facelab.serve.keras_runtime import FaceAnalyzer

    load_start = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facelab-bench-onnx-") as tmp:
        folder = Path(tmp)
        if args.keypoints_model and args.emotion_model:
            kp_file, em_file = Path(args.keypoints_model), Path(args.emotion_model)
            classes = args.classes.split(",") if args.classes else None
            about = f"`{kp_file}` and `{em_file}`"
        else:
            kp_file, em_file, classes, about = build_models(args.keypoints_profile, args.emotion_profile, folder)
        exported = onnx_export.export_files(kp_file, em_file, folder / "onnx", classes)
        keras_analyser = FaceAnalyzer(inference.load_model(kp_file), inference.load_model(em_file), classes or [])
        if not classes:
            classes = [str(i) for i in range(int(keras_analyser.emotion_model.output_shape[-1]))]
            keras_analyser.classes = classes
        onnx_analyser = onnx_runtime.OnnxFaceAnalyzer(
            exported["keypoints"]["file"], exported["emotion"]["file"], classes
        )
        faces = synthetic.make_keypoint_faces(max(BATCHES), seed=0)[0]  # 96x96 crops, as predict feeds them

        spinning = onnx_runtime.OnnxFaceAnalyzer(
            onnx_runtime.OnnxModel(exported["keypoints"]["file"], spin=True),
            onnx_runtime.OnnxModel(exported["emotion"]["file"], spin=True),
            classes,
        )
        runtimes = {
            "Keras (TensorFlow)": keras_analyser,
            "ONNX Runtime (facelab's: idle threads sleep)": onnx_analyser,
            "ONNX Runtime, spin-waiting (its default)": spinning,
        }
        rows = []
        for batch in BATCHES:
            calls = max(BATCHES) // batch  # 64 faces a run, one call per `batch` faces
            chunk = faces[:batch]
            for what, method in (
                ("keypoints", "keypoints"),
                ("emotion", "probabilities"),
                ("both (analyse)", "analyse"),
            ):
                # The runtimes take turns within each repeat: a change in the machine's load hits them alike.
                times = {name: [] for name in runtimes}
                for repeat in range(args.repeats + 2):  # the first two: warm-up
                    for name, analyser in runtimes.items():
                        fn = getattr(analyser, method)
                        start = time.perf_counter()
                        for _ in range(calls):
                            fn(chunk)
                        if repeat >= 2:
                            times[name].append(time.perf_counter() - start)
                for name, spent in times.items():
                    count = calls * batch
                    best, median = min(spent), statistics.median(spent)
                    rows.append((name, what, batch, count / best, count / median, best * 1e3 / count))
        rows.sort(key=lambda row: (list(runtimes).index(row[0]), row[2]))
        sizes = {task: (info["keras_bytes"], info["bytes"], info["max_abs_diff"]) for task, info in exported.items()}
    load_end = os.getloadavg()
    seconds = time.perf_counter() - started

    command = "python benchmarks/bench_onnx.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    print(f"facelab ONNX benchmark: `{command}` ({seconds:.0f} s)\n")
    print(f"- machine: {cpu_model()}, {os.cpu_count()} cores; load average {load_start[0]:.2f} / {load_start[1]:.2f}")
    print(f"  at start, {load_end[0]:.2f} / {load_end[1]:.2f} at end (1 / 5 min; 2.0 = both cores busy)")
    print(
        f"- TensorFlow {tf.__version__}, ONNX Runtime {onnxruntime.__version__} (CPU provider), "
        f"tf2onnx {tf2onnx.__version__}, opset {onnx_export.OPSET}"
    )
    print(f"- models: {about}; untrained (speed and size do not depend on the weights)")
    print(
        f"- faces: 64 synthetic 96x96 crops; best of {args.repeats} runs of 64 faces (median), the runtimes "
        "taking turns within each run\n"
    )
    print("| runtime | model | faces per call | faces/s, best | faces/s, median | ms per face, best |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for runtime, what, batch, rate, median_rate, ms in rows:
        print(f"| {runtime} | {what} | {batch} | {rate:.1f} | {median_rate:.1f} | {ms:.2f} |")
    both = {(r, b): rate for r, w, b, rate, _, _ in rows if w.startswith("both")}
    print()
    for batch in BATCHES:
        keras_rate = both[("Keras (TensorFlow)", batch)]
        ratios = ", ".join(f"{name} {both[(name, batch)] / keras_rate:.2f}x" for name in runtimes if "ONNX" in name)
        print(f"- batch {batch}, both models: {ratios} Keras's faces/s")
    print("\n| model | .keras file | .onnx file | max abs ONNX - Keras on 256 test faces |")
    print("| --- | ---: | ---: | ---: |")
    for task, (keras_bytes, onnx_bytes, diff) in sizes.items():
        unit = "px" if task == "keypoints" else "probability"
        print(f"| {task} | {keras_bytes / 1e6:.2f} MB | {onnx_bytes / 1e6:.2f} MB | {diff:.2g} {unit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
