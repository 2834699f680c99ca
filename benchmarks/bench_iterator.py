"""Per-epoch img/s and CPU use of one fit: a new tf.data iterator each epoch against one repeated iterator.

Run from the repository root (not part of run_all: it explains a choice in ``training.fit``):

    python benchmarks/bench_iterator.py [--task keypoints|emotion] [--faces 1440] [--epochs 6]

It trains the pipeline's model (``build_keypoint_model(96)`` or ``build_emotion_model(5, 48)`` with
the emotion augmentation) on random faces, in ``input_pipeline.make_dataset`` batches of BATCH, twice:

* ``new iterator``: ``model.fit(dataset, epochs=...)``, Keras's way with a finite dataset;
* ``repeated``: ``model.fit(dataset.repeat(), steps_per_epoch=..., epochs=...)``, as ``training.fit``.

For every epoch it prints img/s and the process's CPU use (CPU seconds / wall seconds; 2.0 = both
cores of a 2-core machine busy). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

BATCH = 32
SEED = 1
EMOTION_AUGMENTATION = dict(flip=True, rotation=0.05, shift=0.1, zoom=0.1, contrast=0.3)


def build(task: str, faces: int):
    """(compiled model, finite shuffled training dataset) for ``task``."""
    import keras

    from facelab.data.augmentation import emotion_augmenter
    from facelab.nn import input_pipeline, precision, training
    from facelab.nn.resnet import build_emotion_model, build_keypoint_model

    rng = np.random.default_rng(SEED)
    precision.set_precision("auto")
    optimizer = training.make_optimizer(1e-3, "cosine", 1e-4, 1000)
    if task == "emotion":
        images = rng.integers(0, 255, (faces, 48, 48), dtype=np.uint8)
        labels = np.eye(5, dtype=np.float32)[rng.integers(0, 5, faces)]
        model = build_emotion_model(5, 48, 48, width=64, stem="imagenet", dropout=0.2)
        model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy())
        augmenter = emotion_augmenter(seed=SEED, **EMOTION_AUGMENTATION)
        return model, input_pipeline.make_dataset(images, labels, BATCH, shuffle=True, seed=SEED, augmenter=augmenter)
    images = rng.integers(0, 255, (faces, 96, 96), dtype=np.uint8)
    points = rng.uniform(10, 80, (faces, 30)).astype(np.float32)
    model = build_keypoint_model(96, width=64, stem="imagenet")
    model.compile(optimizer=optimizer, loss=training.masked_mse)
    return model, input_pipeline.make_dataset(images, points, BATCH, shuffle=True, seed=SEED)


def per_epoch(task: str, faces: int, epochs: int, repeated: bool) -> list[tuple[float, float]]:
    """[(img/s, CPU cores in use)] for each epoch of one fit on a fresh model."""
    import keras

    rows = []

    class EpochUse(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            wall = time.perf_counter() - self.wall
            rows.append((steps * BATCH / wall, (time.process_time() - self.cpu) / wall))

    model, dataset = build(task, faces)
    steps = faces // BATCH
    if repeated:
        model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[EpochUse()])
    else:
        model.fit(dataset, epochs=epochs, verbose=0, callbacks=[EpochUse()])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["keypoints", "emotion"], default="emotion")
    parser.add_argument("--faces", type=int, default=1440, help="training faces (the synthetic default: 1440)")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    results = {
        way: per_epoch(args.task, args.faces, args.epochs, way == "repeated") for way in ("new iterator", "repeated")
    }
    print(
        f"`python benchmarks/bench_iterator.py --task {args.task} --faces {args.faces} --epochs {args.epochs}` "
        f"(batch {BATCH}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end)\n"
    )
    print("| epoch | " + " | ".join(f"{way}: img/s | {way}: CPU cores" for way in results) + " |")
    print("| ---: |" + " ---: | ---: |" * len(results))
    for epoch in range(args.epochs):
        cells = [f"{results[way][epoch][0]:.0f} | {results[way][epoch][1]:.2f}" for way in results]
        print(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
