"""Throughput of the on-the-fly emotion augmentation alone: in order (as facelab runs it) or in parallel.

Run from the repository root (not part of run_all: it explains a choice in ``input_pipeline.make_dataset``):

    python benchmarks/bench_augmentation.py [--batches 300] [--repeats 2]

It reads BATCH-sized batches of random 48x48 faces from ``input_pipeline.make_dataset`` with the emotion
augmentation of params.yaml (``augment.emotion_augmenter``), repeated, and reports faces/s of:

* ``in order``: ``make_dataset`` as the pipeline uses it (one map call at a time: the Keras random
  layers draw in the same order every run);
* ``parallel``: ``make_dataset`` without an augmenter, then the same augmentation in a map with
  ``num_parallel_calls=AUTOTUNE`` (faster, but the draws interleave differently every run, and so
  did the emotion metrics);
* ``no augmentation``: ``make_dataset`` without an augmenter, for scale.

It also hashes the first batches of two fresh pipelines of each kind and says whether they match.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

BATCH = 32
FACES = 4096
SIZE = 48
SEED = 1
EMOTION_AUGMENTATION = dict(flip=True, rotation=0.05, shift=0.1, zoom=0.1, contrast=0.3)
HASHED_BATCHES = 30


def pipeline(kind: str, images: np.ndarray, labels: np.ndarray):
    import keras
    import tensorflow as tf

    from facelab.data.augmentation import emotion_augmenter
    from facelab.nn import input_pipeline

    keras.utils.set_random_seed(SEED)
    if kind == "no augmentation":
        return input_pipeline.make_dataset(images, labels, BATCH, shuffle=True, seed=SEED).repeat()
    augmenter = emotion_augmenter(seed=SEED, **EMOTION_AUGMENTATION)
    if kind == "in order":
        return input_pipeline.make_dataset(images, labels, BATCH, shuffle=True, seed=SEED, augmenter=augmenter).repeat()
    # float batches, no augmentation
    batches = input_pipeline.make_dataset(images, labels, BATCH, shuffle=True, seed=SEED)
    return (
        batches.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .repeat()
    )


def faces_per_second(ds, batches: int) -> float:
    iterator = iter(ds)
    next(iterator)  # start-up: tracing and the prefetch buffer
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - started)


def digest(ds) -> str:
    hashed = hashlib.sha1()
    for x, _ in ds.take(HASHED_BATCHES):
        hashed.update(np.asarray(x).tobytes())
    return hashed.hexdigest()[:12]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (FACES, SIZE, SIZE), dtype=np.uint8)
    labels = np.zeros(FACES, np.float32)
    print(
        f"`python benchmarks/bench_augmentation.py --batches {args.batches} --repeats {args.repeats}` "
        f"({SIZE}x{SIZE}, batch {BATCH}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start)\n"
    )
    print("| map | faces/s (each repeat) | two fresh pipelines draw the same faces |")
    print("| --- | --- | --- |")
    for kind in ("in order", "parallel", "no augmentation"):
        rates = [faces_per_second(pipeline(kind, images, labels), args.batches) for _ in range(args.repeats)]
        same = digest(pipeline(kind, images, labels)) == digest(pipeline(kind, images, labels))
        print(f"| {kind} | {', '.join(f'{r:,.0f}' for r in rates)} | {'yes' if same else 'no'} |")
    print(f"\nLoad average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
