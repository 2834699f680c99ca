"""Training throughput: facelab's training path against the plain Keras recipe, same model, same machine.

Run from the repository root:

    python benchmarks/bench_training.py [--rounds 5] [--tasks keypoints emotion [emotion96]] [--profiles NAME ...]

For each task it builds the model the pipeline trains, with what ``training_tasks.fixed_task_params`` pins
whatever params.yaml says (``build_keypoint_model(96, width=64)`` and ``build_emotion_model(5, 48, 48, width=64)``,
with the stems of params.yaml; it says ``imagenet`` for both, where build_emotion_model's own default, ``small``,
is 16x the work) twice (task ``emotion96``, not run by default: the emotion model with ``image_size=96``, as the
original emotion recipe trained it: 48x48 faces resized to 96x96 inside the model):

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
per-round ratios. The machine may be shared: the load average is printed with every table.

It also reports each model's forward FLOPs per image, counted analytically from the Keras layers
(convolution: out_H * out_W * C_out * k * k * C_in * 2; dense: in * out * 2; batch norm, ReLU,
pooling and adds are left out, < 1 %), the training FLOP/s achieved (3 x forward x img/s) and the
machine's measured matmul peak (``tf.linalg.matmul`` of MATMUL_SIZE^2 matrices, float32 and
bfloat16, median of MATMUL_REPEATS), and achieved/peak in the dtype each variant computes in.
Prints Markdown.

``--profiles NAME ...`` (profiles/NAME.yaml; with a bare ``--tasks``, the profiles alone) adds a row per
profile: the network its training stage trains with params.yaml under the profile (``training_tasks``: the
keypoint task if it reads keypoints from a file, else emotion), built by ``build_*_model_from`` from that
stage's section (width, stem, head, image size, crop, dropout) at its batch size, on synthetic 96x96 / 48x48 faces
(its keypoint copies, its emotion classes). plain: the recipe above on that network; facelab: what the stage
does under the profile (precision, optimizer, schedule, weight decay, keypoint loss and metric, augmentation,
mixup, label smoothing, class weights), like the tasks without validation, checkpoints, ``ema`` or ``sam_rho``.
Shorter measurements: PROFILE_STEPS batches an epoch (or ``--steps``; keypoints: rounded up to whole faces),
MIN_PROFILE_ROUNDS to ``--rounds`` rounds, none begun after PROFILE_BUDGET_S s; no goals recorded. A missing or
invalid profile: one error line and exit status 1, before anything is measured.
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
import training_tasks  # noqa: E402  (benchmarks/training_tasks.py)

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
SCHEDULE_STEPS = 10_000  # the learning-rate schedule's length (its cost does not depend on it)
PROFILE_STEPS = 12  # a profile's batches an epoch (--steps overrides); its rounds: at least MIN_PROFILE_ROUNDS,
MIN_PROFILE_ROUNDS = 2  # then none begun once its timed rounds have taken PROFILE_BUDGET_S (the six profiles
PROFILE_BUDGET_S = 30  # of `make bench`: a few minutes on 2 cores)


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


def side_by_side(
    variants: dict, batch_size: int, rounds: int, steps: int, min_rounds: int = MIN_ROUNDS, budget_s=TASK_BUDGET_S
) -> dict[str, list[float]]:
    """{name: (model, fit args, fit kwargs)} -> {name: [img/s per round]}, alternating the variants."""
    for model, args, kwargs in variants.values():  # trace + compile, untimed
        model.fit(*args, **{**kwargs, "epochs": 1, "steps_per_epoch": WARMUP_STEPS, "verbose": 0})
    rates = {name: [] for name in variants}
    started = time.perf_counter()
    for round_ in range(rounds):
        if round_ >= min_rounds and time.perf_counter() - started > budget_s:
            break
        for name, (model, args, kwargs) in variants.items():
            rates[name].append(images_per_second(model, args, kwargs, batch_size, steps))
            print(f"  {name}: {rates[name][-1]:.1f} img/s (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    return rates


# --- the tasks: fixed ones and profiles --------------------------------------------------------


def _faces_needed(batch: int, steps: int, per_face: int = 1) -> int:
    """Faces for epochs of exactly ``steps`` full batches (``per_face`` images each)."""
    if steps * batch % per_face:
        raise SystemExit(f"{steps} batches of {batch} do not split into faces of {per_face} images each")
    return steps * batch // per_face


def _optimizer(cfg: dict):
    from facelab.nn import training

    return training.make_optimizer_from(cfg, SCHEDULE_STEPS)


def keypoint_variants(params: dict, steps: int, metric: bool = False):
    """plain and facelab on ``params``' keypoint network; ``metric``: facelab tracks masked MSE, as the stage does."""
    import keras

    from facelab.data import synthetic
    from facelab.data.augmentation import expand_keypoint_training_set
    from facelab.formats import KEYPOINT_IMAGE_SIZE
    from facelab.nn import input_pipeline, precision, training
    from facelab.nn.resnet import build_keypoint_model_from

    cfg, aug = params["train_keypoints"], dict(params["augment"]["keypoints"])
    copies = aug.pop("copies")
    batch = cfg["batch_size"]
    images, points = synthetic.make_keypoint_faces(_faces_needed(batch, steps, copies + 1), SEED)
    images, points = expand_keypoint_training_set(images, points, copies, SEED, **aug)

    keras.mixed_precision.set_global_policy("float32")
    plain = build_keypoint_model_from(cfg, KEYPOINT_IMAGE_SIZE)
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = images.astype(np.float32)[..., None]  # the classic float32 array in memory
    plain_fit = ((x, points), {"batch_size": batch, "shuffle": True})

    policy = precision.set_precision(cfg["precision"])
    ours = build_keypoint_model_from(cfg, KEYPOINT_IMAGE_SIZE)
    ours.compile(
        optimizer=_optimizer(cfg),
        loss=training.KEYPOINT_LOSSES[cfg["loss"]],
        metrics=[training.masked_mse] if metric else None,
    )
    ds = input_pipeline.make_dataset(images, points, batch, shuffle=True, seed=SEED).repeat()  # as training.fit
    keras.mixed_precision.set_global_policy("float32")
    ours_fit = ((ds,), {"shuffle": False, "steps_per_epoch": steps})
    return policy, len(images), {"plain": (plain, *plain_fit), "facelab": (ours, *ours_fit)}, batch


def emotion_variants(params: dict, steps: int):
    import keras

    from facelab.data import synthetic
    from facelab.data.augmentation import emotion_augmenter, emotion_mixer
    from facelab.nn import input_pipeline, precision
    from facelab.nn.resnet import build_emotion_model_from
    from facelab.pipeline.train import class_weights

    cfg = params["train_emotion"]
    classes = len(params["data"]["emotion"]["classes"])
    batch = cfg["batch_size"]
    images, labels = synthetic.make_emotion_faces(_faces_needed(batch, steps), SEED)
    labels = labels % classes  # 7 FER ids folded onto the classes: only the shapes matter here
    one_hot = np.eye(classes, dtype=np.float32)[labels]
    input_size = images.shape[1]

    keras.mixed_precision.set_global_policy("float32")
    plain = build_emotion_model_from(cfg, classes, input_size)
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    plain_ds = _plain_emotion_dataset(images, one_hot, batch, SEED)

    policy = precision.set_precision(cfg["precision"])
    ours = build_emotion_model_from(cfg, classes, input_size)
    ours.compile(
        optimizer=_optimizer(cfg),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg["label_smoothing"]),
        metrics=["accuracy"],
    )
    weights = class_weights(labels, classes, cfg["class_weights"])[labels]
    augmenter = emotion_augmenter(seed=SEED, **params["augment"]["emotion"])
    mixer = emotion_mixer(cfg["mixup"], SEED)  # None (off) at mixup 0
    ds = input_pipeline.make_dataset(
        images, one_hot, batch, shuffle=True, seed=SEED, augmenter=augmenter, mixer=mixer, sample_weights=weights
    ).repeat()  # as training.fit
    keras.mixed_precision.set_global_policy("float32")
    ours_fit = ((ds,), {"shuffle": False, "steps_per_epoch": steps})
    return policy, len(images), {"plain": (plain, (plain_ds,), {"shuffle": False}), "facelab": (ours, *ours_fit)}, batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--steps", type=int, help="batches an epoch, every task (default: STEPS, PROFILE_STEPS)")
    parser.add_argument("--tasks", nargs="*", choices=list(STEPS), default=DEFAULT_TASKS)
    parser.add_argument("--profiles", nargs="+", default=[], metavar="NAME", help="also these profiles/NAME.yaml")
    args = parser.parse_args()
    if not args.tasks and not args.profiles:
        parser.error("nothing to measure: no --tasks and no --profiles")

    from facelab.config import load_params
    from facelab.errors import FacelabError

    params = load_params(REPO / "params.yaml")
    fixed = [training_tasks.fixed_task_params(params, task, WIDTH, EMOTION_CLASSES) for task in args.tasks]
    jobs = [(task, task, p, args.steps or STEPS[task], False) for task, p in zip(args.tasks, fixed)]
    for name in args.profiles:  # all read (and any error reported) before TensorFlow starts
        try:
            task, applied = training_tasks.profile_params(name)
        except FacelabError as exc:
            print(f"bench_training.py: --profiles {name}: {exc}", file=sys.stderr)
            return 1
        steps = training_tasks.whole_faces(task, applied, args.steps or PROFILE_STEPS)
        jobs.append((name, task, applied, steps, True))

    import keras
    import tensorflow as tf

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
    for name, task, task_params, steps, profile in jobs:
        if task == "keypoints":
            policy, n_images, variants, batch = keypoint_variants(task_params, steps, metric=profile)
        else:
            policy, n_images, variants, batch = emotion_variants(task_params, steps)
        flops = forward_flops(variants["facelab"][0])
        assert flops == forward_flops(variants["plain"][0])
        print(f"{name}: {n_images} images, batch {batch}, facelab policy {policy}", file=sys.stderr, flush=True)
        load_start = os.getloadavg()[0]
        limits = (MIN_PROFILE_ROUNDS, PROFILE_BUDGET_S) if profile else (MIN_ROUNDS, TASK_BUDGET_S)
        rates = side_by_side(variants, batch, args.rounds, steps, *limits)
        load_end = os.getloadavg()[0]
        plain, ours = statistics.median(rates["plain"]), statistics.median(rates["facelab"])
        pair_ratio = statistics.median(o / p for o, p in zip(rates["facelab"], rates["plain"]))
        cfg = task_params["train_keypoints" if task == "keypoints" else "train_emotion"]
        timed = f"{len(rates['plain'])} rounds x {TIMED_EPOCHS} epochs of {steps} batches"
        label = f"{name} ({training_tasks.describe(task, cfg, profile)}, batch {batch}, {timed})"
        rows.append((label, flops, plain, ours, pair_ratio, policy, load_start, load_end, rates, profile))
        del variants

    bf16 = "bfloat16" in policy
    tasks = "".join(f" {task}" for task in args.tasks)
    profiles = " --profiles " + " ".join(args.profiles) if args.profiles else ""
    profile_rounds = f"; profiles: {MIN_PROFILE_ROUNDS}-{args.rounds}, {PROFILE_BUDGET_S} s" if profiles else ""
    nets = (f"ResNet-18 width {WIDTH}" if args.tasks else "ResNet-18") + (
        " (profiles: as each sets it, at its batch size)" if profiles else ""
    )
    print("### Training throughput: facelab vs the plain Keras recipe (same model)\n")
    print(
        f"`python benchmarks/bench_training.py --rounds {args.rounds}"
        f"{f' --steps {args.steps}' if args.steps else ''} --tasks{tasks}{profiles}`: {nets}, "
        f"synthetic faces, TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"{MIN_ROUNDS}-{args.rounds} alternating plain/facelab rounds (fewer when a task's rounds pass "
        f"{TASK_BUDGET_S} s{profile_rounds}), "
        f"each a fit of 1 + {TIMED_EPOCHS} epochs of the batches shown, timed after the first "
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
    for task, _flops, plain, ours, pair_ratio, policy, l0, l1, rates, _profile in rows:
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
    for task, flops, plain, ours, _pair_ratio, policy, _l0, _l1, _rates, _profile in rows:
        task = task.split(" (")[0]
        peak_ours = peaks["bfloat16"] if "bfloat16" in policy else peaks["float32"]
        a_plain, a_ours = 3 * flops * plain, 3 * flops * ours
        print(
            f"| {task} | {flops / 1e9:.3f} | {3 * flops / 1e9:.3f} | {a_plain / 1e9:.1f} "
            f"({100 * a_plain / peaks['float32']:.0f} %) | {a_ours / 1e9:.1f} ({100 * a_ours / peak_ours:.0f} %"
            f"{' of bf16' if 'bfloat16' in policy else ''}) |"
        )
    print()
    for task, flops, plain, ours, pair_ratio, policy, _l0, _l1, _rates, profile in rows:
        if profile:
            continue
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
