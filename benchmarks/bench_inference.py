"""Benchmark: the cost of analysing photos (read, detect, crop, both models) per face, with and without XLA.

    python benchmarks/bench_inference.py [--repeats 7] [--width 64]

* latency: one photo with one face, analysed alone (``batch_faces=1``): the time a request of one
  photo takes, end to end, per face;
* throughput: 16 photos with 4 faces each, the 64 faces analysed in one batch of 64.

Both with the full-width ResNet-18s that the pipeline trains (``width=64``, stems and sizes from
params.yaml), untrained: the cost does not depend on the weights. "XLA" compiles the models' call
with ``tf.function(jit_compile=True)`` instead of facelab's plain ``tf.function``. Each figure is the
best of ``--repeats`` runs (the median is shown beside it), after warm-up runs that trace and compile.
The photos are real faces from ../shared/data (YTF keypoint faces, upscaled and pasted on a background).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import goals  # noqa: E402  (benchmarks/goals.py)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parents[1]
YTF_VAL = REPO.parent / "shared" / "data" / "keypoints" / "ytf-keypoints-val.csv.gz"


def make_photo(path: Path, faces: list[np.ndarray], seed: int) -> None:
    """A 1280x720 JPEG with the faces upscaled to 200-260 px side by side on a blurred noise background."""
    rng = np.random.default_rng(seed)
    photo = cv2.GaussianBlur(rng.integers(60, 200, (720, 1280)).astype(np.uint8), (0, 0), 8)
    for index, face in enumerate(faces):
        size = 200 + 20 * index
        x, y = 30 + 310 * index, 120 + 40 * index
        photo[y : y + size, x : x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])


def use_xla(model, enabled: bool) -> None:
    """Replace the tf.function that facelab.nn.inference caches on the model (with or without jit_compile)."""
    import tensorflow as tf

    model._facelab_infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True, jit_compile=enabled)


def best_of(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    if not YTF_VAL.exists():
        print(f"real faces not found at {YTF_VAL}: nothing to benchmark", file=sys.stderr)
        return 1

    import tensorflow as tf

    from facelab.config import load_params
    from facelab.nn.resnet import build_emotion_model, build_keypoint_model
    from facelab.serve import photos
    from facelab.serve.keras_runtime import FaceAnalyzer
    from facelab.serve.photo_batches import analyse_images

    params = load_params(REPO / "params.yaml")
    kp_cfg, em_cfg = params["train_keypoints"], params["train_emotion"]
    classes = params["data"]["emotion"]["classes"]
    keypoints = build_keypoint_model(width=args.width, stem=kp_cfg["stem"])
    emotion = build_emotion_model(len(classes), image_size=em_cfg["image_size"], width=args.width, stem=em_cfg["stem"])
    analyzer = FaceAnalyzer(keypoints, emotion, classes)

    frame = pd.read_csv(YTF_VAL, nrows=64)
    faces = [np.array(s.split(), np.uint8).reshape(96, 96) for s in frame["Image"]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        single = Path(tmp) / "one-face.jpg"
        make_photo(single, faces[:1], seed=0)
        group = []
        for index in range(16):
            path = Path(tmp) / f"four-faces-{index}.jpg"
            make_photo(path, faces[4 * index : 4 * index + 4], seed=index)
            group.append(path)
        found = [len(photos.detect_faces(photos.read_photo(p))) for p in [single, *group]]
        n_group = sum(found[1:])
        if found[0] != 1:
            print(f"the detector found {found[0]} faces in the one-face photo", file=sys.stderr)
            return 1

        gray = photos.read_photo(single)
        box = photos.detect_faces(gray)[0]
        crop, _ = photos.crop_face(gray, box, analyzer.keypoint_size)
        crops = np.stack(
            [
                photos.crop_face(photos.read_photo(p), b, analyzer.keypoint_size)[0]
                for p in group
                for b in photos.detect_faces(photos.read_photo(p))
            ]
        )

        group_gray = photos.read_photo(group[0])
        stages = {  # name: (function, faces it handles)
            "read (1280x720 JPEG)": (lambda: photos.read_photo(single), 1),
            "detect (Haar), 1-face photo": (lambda: photos.detect_faces(gray), 1),
            "detect (Haar), 4-face photo": (lambda: photos.detect_faces(group_gray), found[1]),
            "crop": (lambda: photos.crop_face(gray, box, analyzer.keypoint_size), 1),
        }
        for name, (fn, count) in stages.items():
            best, median = best_of(fn, args.repeats * 3)
            rows.append((name, "-", count, best * 1e3 / count, median * 1e3 / count, count / best))

        for xla in (False, True):
            use_xla(keypoints, xla)
            use_xla(emotion, xla)
            label = "XLA" if xla else "tf.function"
            best, median = best_of(lambda: analyzer.analyse(crop[None]), args.repeats)
            rows.append(("both models", label, 1, best * 1e3, median * 1e3, 1 / best))
            best, median = best_of(lambda: analyzer.analyse(crops), args.repeats)
            rows.append(
                (
                    "both models",
                    label,
                    len(crops),
                    best * 1e3 / len(crops),
                    median * 1e3 / len(crops),
                    len(crops) / best,
                )
            )
            one = [(str(single), partial(photos.read_photo, single))]
            best, median = best_of(lambda: analyse_images(one, analyzer, batch_faces=1), args.repeats)
            rows.append(("whole analysis, 1 photo, 1 face", label, 1, best * 1e3, median * 1e3, 1 / best))
            many = [(str(p), partial(photos.read_photo, p)) for p in group]
            best, median = best_of(lambda: analyse_images(many, analyzer, batch_faces=64), args.repeats)
            rows.append(
                (
                    f"whole analysis, 16 photos, {n_group} faces",
                    label,
                    64,
                    best * 1e3 / n_group,
                    median * 1e3 / n_group,
                    n_group / best,
                )
            )

    print("facelab inference benchmark: `python benchmarks/bench_inference.py`\n")
    print(f"- machine: {cpu_model()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}, OpenCV {cv2.__version__}")
    print(
        f"- models: ResNet-18 width {args.width}, untrained (keypoints {analyzer.keypoint_size}x"
        f"{analyzer.keypoint_size} stem {kp_cfg['stem']}; emotion {analyzer.emotion_size}x{analyzer.emotion_size} "
        f"-> {em_cfg['image_size']}, stem {em_cfg['stem']}); best of {args.repeats} runs (median)\n"
    )
    print("| step | models compiled as | faces per call | ms per face, best | ms per face, median | faces/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, label, batch, best_ms, median_ms, rate in rows:
        print(f"| {name} | {label} | {batch} | {best_ms:.2f} | {median_ms:.2f} | {rate:.1f} |")
    both = {(label, batch): best_ms for name, label, batch, best_ms, _, _ in rows if name == "both models"}
    haar = [median_ms for name, _, _, _, median_ms, _ in rows if name.startswith("detect (Haar), 1-face")]
    note = f"Haar detection ({haar[0]:.0f} ms a 1-face photo, median) dominates `facelab predict`" if haar else ""
    goals.record(
        "inference: both models, per face, with and without XLA (reported, no goal)",
        "; ".join(f"{label} batch {batch}: {ms:.1f} ms" for (label, batch), ms in both.items()),
        None,
        note,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
