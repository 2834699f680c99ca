"""Training throughput: facelab's training path against the plain Keras recipe, same model, same machine.

Run from the repository root:

    python benchmarks/bench_training.py [--rounds 5] [--tasks keypoints emotion [emotion96]]

For each task it builds the model the pipeline trains (``build_keypoint_model(96, width=64)`` and
``build_emotion_model(5, 48, 48, width=64)``, with the stems of params.yaml as train.py passes them;
params.yaml says ``imagenet`` for both, where build_emotion_model's own default, ``small``, is 16x the work) twice
(task ``emotion96``, not run by default: the emotion model with ``image_size=96``, as the original
emotion recipe trained it: 48x48 faces resized to 96x96 inside the model):

* plain: the classic notebook recipe. float32 everywhere; ``model.fit`` on in-memory float32 numpy
  arrays (converted from uint8 in numpy before training); Adam, plain MSE / categorical
  cross-entropy. Augmentation the classic way: for keypoints the augmented copies are precomputed in
  numpy (the same images per epoch as facelab's ``augment`` stage writes); for emotion a
  ``keras.utils.PyDataset`` (default settings: one worker, the main thread) flips and shifts every
  batch in numpy (Keras 3 has no ImageDataGenerator).
* facelab: what ``facelab.pipeline.train`` does: ``precision.set_precision("auto")`` (mixed_bfloat16 on a CPU
  with AVX512_BF16/AMX, mixed_float16 on a GPU, else float32), ``input_pipeline.make_dataset`` over uint8
  arrays (emotion: with ``augment.emotion_augmenter`` from params.yaml and per-sample class weights),
  AdamW with the cosine schedule, ``training.masked_mse`` / categorical cross-entropy.

Both are warmed up with one short ``fit`` (tracing and compiling), then timed alternately
(plain, facelab, plain, facelab, ...; up to ``--rounds`` pairs, at least MIN_ROUNDS, no new round
once a task's timed rounds have taken TASK_BUDGET_S). Each measurement is a short training run as
each recipe does it: one ``fit`` of 1 + TIMED_EPOCHS epochs over STEPS[task] batches of faces
(plain: Keras's own epochs over the arrays / PyDataset, a new iterator each epoch; facelab: as
``training.fit``, the dataset repeated and read through one iterator, ``steps_per_epoch`` batches an
epoch), timed from the end of the first epoch (iterator and prefetch start-up) to the end of the
last; the median img/s of each is reported, with the ratio of the medians and the median of the
per-round ratios. The machine may be
shared: the load average is printed with every table.

It also reports each model's forward FLOPs per image, counted analytically from the Keras layers
(convolution: out_H * out_W * C_out * k * k * C_in * 2; dense: in * out * 2; batch norm, ReLU,
pooling and adds are left out, < 1 %), the training FLOP/s achieved (3 x forward x img/s) and the
machine's measured matmul peak (``tf.linalg.matmul`` of MATMUL_SIZE^2 matrices, float32 and
bfloat16, median of MATMUL_REPEATS), and achieved/peak in the dtype each variant computes in.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import goals  # noqa: E402  (benchmarks/goals.py)
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

ROUNDS = 5  # plain/facelab pairs timed per task, at most ...
MIN_ROUNDS = 3  # ... and at least: rounds stop after MIN_ROUNDS once a task's timed
TASK_BUDGET_S = 90  # rounds have taken TASK_BUDGET_S (a busy machine: keeps the run near 5 min)
STEPS = {"keypoints": 45, "emotion": 45, "emotion96": 20}  # batches an epoch: 45 = the synthetic default's 1,440 faces
TIMED_EPOCHS = 2  # timed epochs of each measurement, after one untimed (iterator/prefetch start-up)
DEFAULT_TASKS = ["keypoints", "emotion"]
WARMUP_STEPS = 3  # first fit of each variant: tracing + compiling
EMOTION_CLASSES = 5
WIDTH = 64
SEED = 42
MATMUL_SIZE = 2048
MATMUL_REPEATS = 7
SHIFT = 0.1  # plain emotion recipe: random shift up to 10 % of the side, and random flips


def load_avg() -> str:
    return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())


# --- FLOPs and the matmul peak ----------------------------------------------------------------


def forward_flops(model) -> int:
    """Multiply-adds x 2 of every Conv2D and Dense layer of ``model`` for one image."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w = layer.kernel_size
            c_in = layer.input.shape[-1] // layer.groups
            total += 2 * h * w * c_out * k_h * k_w * c_in
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def matmul_peak(dtype: str) -> float:
    """FLOP/s of a MATMUL_SIZE^2 x MATMUL_SIZE^2 matmul (median of MATMUL_REPEATS after a warm-up)."""
    import tensorflow as tf

    n = MATMUL_SIZE
    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y)[:1, :1], tf.float32)))
    matmul(a, b).numpy()
    times = []
    for _ in range(MATMUL_REPEATS):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


# --- the plain recipe's emotion augmentation ------------------------------------------------------


def _plain_emotion_dataset(images: np.ndarray, one_hot: np.ndarray, batch_size: int, seed: int):
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        """Shuffled batches of float32 images, each randomly flipped and shifted in numpy."""

        def __init__(self):
            super().__init__()
            self.x = images.astype(np.float32)[..., None]
            self.y = one_hot
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(self.x))

        def __len__(self):
            return len(self.x) // batch_size

        def __getitem__(self, index):
            take = self.order[index * batch_size : (index + 1) * batch_size]
            x = self.x[take].copy()
            flip = self.rng.random(len(x)) < 0.5
            x[flip] = x[flip, :, ::-1]
            size = x.shape[1]
            limit = int(round(SHIFT * size))
            padded = np.pad(x, ((0, 0), (limit, limit), (limit, limit), (0, 0)), mode="edge")
            for i, (dy, dx) in enumerate(self.rng.integers(-limit, limit + 1, (len(x), 2))):
                x[i] = padded[i, limit + dy : limit + dy + size, limit + dx : limit + dx + size]
            return x, self.y[take]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(self.x))

    return AugmentedBatches()


# --- timing ------------------------------------------------------------------------------------


def _timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = self.end = None

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.end = time.perf_counter()

    return EpochTimer()


def images_per_second(model, fit_args: tuple, fit_kwargs: dict, batch_size: int, steps: int) -> float:
    """img/s of epochs 2 .. 1 + TIMED_EPOCHS of one ``fit`` (epochs of ``steps`` batches)."""
    timer = _timer()
    model.fit(*fit_args, epochs=1 + TIMED_EPOCHS, verbose=0, callbacks=[timer], **fit_kwargs)
    return TIMED_EPOCHS * steps * batch_size / (timer.end - timer.start)


def side_by_side(variants: dict, batch_size: int, rounds: int, steps: int) -> dict[str, list[float]]:
    """{name: (model, fit args, fit kwargs)} -> {name: [img/s per round]}, alternating the variants."""
    for model, args, kwargs in variants.values():  # trace + compile, untimed
        model.fit(*args, **{**kwargs, "epochs": 1, "steps_per_epoch": WARMUP_STEPS, "verbose": 0})
    rates = {name: [] for name in variants}
    started = time.perf_counter()
    for round_ in range(rounds):
        if round_ >= MIN_ROUNDS and time.perf_counter() - started > TASK_BUDGET_S:
            break
        for name, (model, args, kwargs) in variants.items():
            rates[name].append(images_per_second(model, args, kwargs, batch_size, steps))
            print(f"  {name}: {rates[name][-1]:.1f} img/s (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    return rates


# --- the two tasks --------------------------------------------------------------------------------


def _faces_needed(batch: int, steps: int, per_face: int = 1) -> int:
    """Faces for epochs of exactly ``steps`` full batches (``per_face`` images each)."""
    if steps * batch % per_face:
        raise SystemExit(f"{steps} batches of {batch} do not split into faces of {per_face} images each")
    return steps * batch // per_face


def keypoint_variants(params: dict, steps: int):
    import keras

    from facelab.data import synthetic
    from facelab.data.augmentation import expand_keypoint_training_set
    from facelab.nn import input_pipeline, precision, training
    from facelab.nn.resnet import build_keypoint_model

    cfg, aug = params["train_keypoints"], dict(params["augment"]["keypoints"])
    copies = aug.pop("copies")
    batch = cfg["batch_size"]
    images, points = synthetic.make_keypoint_faces(_faces_needed(batch, steps, copies + 1), SEED)
    images, points = expand_keypoint_training_set(images, points, copies, SEED, **aug)

    keras.mixed_precision.set_global_policy("float32")
    plain = build_keypoint_model(96, width=WIDTH, stem=cfg["stem"])
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = images.astype(np.float32)[..., None]  # the classic float32 array in memory
    plain_fit = ((x, points), {"batch_size": batch, "shuffle": True})

    policy = precision.set_precision("auto")
    ours = build_keypoint_model(96, width=WIDTH, stem=cfg["stem"])
    ours.compile(
        optimizer=training.make_optimizer(cfg["lr"], cfg["lr_schedule"], cfg["weight_decay"], 10_000),
        loss=training.masked_mse,
    )
    ds = input_pipeline.make_dataset(images, points, batch, shuffle=True, seed=SEED).repeat()  # as training.fit
    keras.mixed_precision.set_global_policy("float32")
    return (
        policy,
        len(images),
        {
            "plain": (plain, plain_fit[0], plain_fit[1]),
            "facelab": (ours, (ds,), {"shuffle": False, "steps_per_epoch": steps}),
        },
        batch,
    )


def emotion_variants(params: dict, steps: int, image_size: int = 48):
    import keras

    from facelab.data import synthetic
    from facelab.data.augmentation import emotion_augmenter
    from facelab.nn import input_pipeline, precision, training
    from facelab.nn.resnet import build_emotion_model
    from facelab.pipeline.train import class_weights

    cfg = params["train_emotion"]
    batch = cfg["batch_size"]
    images, labels = synthetic.make_emotion_faces(_faces_needed(batch, steps), SEED)
    labels = labels % EMOTION_CLASSES  # 7 FER ids folded onto 5 classes: only the shapes matter here
    one_hot = np.eye(EMOTION_CLASSES, dtype=np.float32)[labels]

    keras.mixed_precision.set_global_policy("float32")
    plain = build_emotion_model(EMOTION_CLASSES, 48, image_size, width=WIDTH, stem=cfg["stem"], dropout=cfg["dropout"])
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    plain_ds = _plain_emotion_dataset(images, one_hot, batch, SEED)

    policy = precision.set_precision("auto")
    ours = build_emotion_model(EMOTION_CLASSES, 48, image_size, width=WIDTH, stem=cfg["stem"], dropout=cfg["dropout"])
    ours.compile(
        optimizer=training.make_optimizer(cfg["lr"], cfg["lr_schedule"], cfg["weight_decay"], 10_000),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg["label_smoothing"]),
        metrics=["accuracy"],
    )
    weights = class_weights(labels, EMOTION_CLASSES, cfg["class_weights"])
    augmenter = emotion_augmenter(seed=SEED, **params["augment"]["emotion"])
    ds = input_pipeline.make_dataset(
        images, one_hot, batch, shuffle=True, seed=SEED, augmenter=augmenter, sample_weights=weights[labels]
    ).repeat()  # as training.fit
    keras.mixed_precision.set_global_policy("float32")
    return (
        policy,
        len(images),
        {
            "plain": (plain, (plain_ds,), {"shuffle": False}),
            "facelab": (ours, (ds,), {"shuffle": False, "steps_per_epoch": steps}),
        },
        batch,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--steps", type=int, help="batches an epoch, every task (default: STEPS)")
    parser.add_argument("--tasks", nargs="+", choices=list(STEPS), default=DEFAULT_TASKS)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from facelab.config import load_params

    params = load_params(REPO / "params.yaml")
    keras.utils.set_random_seed(SEED)
    started = time.perf_counter()
    load_before = load_avg()
    peaks = {}
    for dtype in ("float32", "bfloat16", "float32", "bfloat16"):  # alternated, best of the two medians
        peaks[dtype] = max(peaks.get(dtype, 0.0), matmul_peak(dtype))
    print(
        f"matmul peak: float32 {peaks['float32'] / 1e9:.1f} GFLOP/s, bfloat16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s",
        file=sys.stderr,
    )

    rows = []
    tasks = {
        "keypoints": keypoint_variants,
        "emotion": emotion_variants,
        "emotion96": lambda p, s: emotion_variants(p, s, image_size=96),
    }
    for task in args.tasks:
        steps = args.steps or STEPS[task]
        policy, n_images, variants, batch = tasks[task](params, steps)
        flops = forward_flops(variants["facelab"][0])
        assert flops == forward_flops(variants["plain"][0])
        print(f"{task}: {n_images} images, batch {batch}, facelab policy {policy}", file=sys.stderr, flush=True)
        load_start = os.getloadavg()[0]
        rates = side_by_side(variants, batch, args.rounds, steps)
        load_end = os.getloadavg()[0]
        plain, ours = statistics.median(rates["plain"]), statistics.median(rates["facelab"])
        pair_ratio = statistics.median(o / p for o, p in zip(rates["facelab"], rates["plain"]))
        stem = params["train_keypoints" if task == "keypoints" else "train_emotion"]["stem"]
        size = {"keypoints": "96", "emotion": "48", "emotion96": "48->96"}[task]
        label = (
            f"{task} ({size}, {stem} stem, batch {batch}, {len(rates['plain'])} rounds x {TIMED_EPOCHS} "
            f"epochs of {steps} batches)"
        )
        rows.append((label, flops, plain, ours, pair_ratio, policy, load_start, load_end, rates))
        del variants

    bf16 = "bfloat16" in policy
    print("### Training throughput: facelab vs the plain Keras recipe (same model)\n")
    print(
        f"`python benchmarks/bench_training.py --rounds {args.rounds}"
        f"{f' --steps {args.steps}' if args.steps else ''} --tasks {' '.join(args.tasks)}`: "
        f"ResNet-18 width {WIDTH}, synthetic faces, TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"{MIN_ROUNDS}-{args.rounds} alternating plain/facelab rounds (fewer when a task's rounds pass "
        f"{TASK_BUDGET_S} s), each a fit of 1 + {TIMED_EPOCHS} epochs of the batches shown, timed after the first "
        "(plain: Keras's epochs, a new iterator each; facelab: one repeated iterator, as `training.fit`), "
        "median img/s. "
        "Augmentation on in both "
        f"(keypoints: precomputed copies; emotion: plain = numpy flip+shift per batch in a PyDataset, "
        f"facelab = Keras flip/rotation/translation/zoom/contrast layers in tf.data).\n"
    )
    print(
        "| task (input px, stem, batch, rounds x timed epochs of batches) | plain float32 img/s | facelab img/s "
        "| facelab / plain | median of per-round ratios | facelab precision | per-round img/s plain; facelab "
        "| load avg (1 min) start -> end |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for task, _flops, plain, ours, pair_ratio, policy, l0, l1, rates in rows:
        per_round = (
            ", ".join(f"{r:.1f}" for r in rates["plain"]) + "; " + ", ".join(f"{r:.1f}" for r in rates["facelab"])
        )
        print(
            f"| {task} | {plain:.1f} | {ours:.1f} | **{ours / plain:.2f}x** | {pair_ratio:.2f}x "
            f"| {policy} | {per_round} | {l0:.2f} -> {l1:.2f} |"
        )
    print()
    print(
        f"Matmul peak of this machine ({MATMUL_SIZE}x{MATMUL_SIZE}, median of {MATMUL_REPEATS}, measured under "
        f"the same load): float32 **{peaks['float32'] / 1e9:.1f} GFLOP/s**, bfloat16 "
        f"**{peaks['bfloat16'] / 1e9:.1f} GFLOP/s**.\n"
    )
    print(
        "| task | forward GFLOP/image | training GFLOP/image (3x) | plain: achieved GFLOP/s (% of fp32 peak) "
        "| facelab: achieved GFLOP/s (% of its dtype's peak) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for task, flops, plain, ours, _pair_ratio, policy, _l0, _l1, _rates in rows:
        task = task.split(" (")[0]
        peak_ours = peaks["bfloat16"] if "bfloat16" in policy else peaks["float32"]
        a_plain, a_ours = 3 * flops * plain, 3 * flops * ours
        print(
            f"| {task} | {flops / 1e9:.3f} | {3 * flops / 1e9:.3f} | {a_plain / 1e9:.1f} "
            f"({100 * a_plain / peaks['float32']:.0f} %) | {a_ours / 1e9:.1f} ({100 * a_ours / peak_ours:.0f} %"
            f"{' of bf16' if 'bfloat16' in policy else ''}) |"
        )
    print()
    for task, flops, plain, ours, pair_ratio, policy, _l0, _l1, _rates in rows:
        peak_ours = peaks["bfloat16"] if "bfloat16" in policy else peaks["float32"]
        goals.record(
            f"training {task.split(' (')[0]} >= 1.3x the plain recipe",
            f"{ours / plain:.2f}x ({plain:.0f} -> {ours:.0f} img/s; per-round median {pair_ratio:.2f}x)",
            ours / plain >= 1.3,
            f"{flops / 1e9:.3f} GFLOP/image forward; facelab at {100 * 3 * flops * ours / peak_ours:.0f} % "
            f"of the {policy.replace('mixed_', '')} matmul peak ({peak_ours / 1e9:.0f} GFLOP/s)",
        )
    gpus = tf.config.list_physical_devices("GPU")
    goals.record(
        "GPU: the same commands train there (mixed_float16; MirroredStrategy over several)",
        f"{len(gpus)} GPU(s) seen; the rows above ran on them" if gpus else "no GPU on this machine",
        None,
        "" if gpus else "not measured",
    )
    print(
        f"Load average (1/5/15 min) at start: {load_before}; at end: {load_avg()}; "
        f"{os.cpu_count()} CPUs; total {time.perf_counter() - started:.0f} s."
        + (" The CPU has AVX512_BF16, so `auto` picks mixed_bfloat16." if bf16 else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
