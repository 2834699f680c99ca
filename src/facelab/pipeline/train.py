"""The two training stages: ``train_keypoints`` and ``train_emotion``.

Each builds the shared ResNet-18 with its head, trains it with ``training.fit`` on the
prepared (and, for keypoints, augmented) arrays, wraps the best model in its test-time averaging
(``train_<task>.tta``, ``facelab.nn.tta``: the saved model is the one evaluate scores and predict
serves), writes it to ``models/``, the per-epoch history to ``plots/`` and training metrics to
``metrics/`` (no timings: those vary run to run and go to MLflow only), among them the validation
figures of the saved model as evaluate scores it (``served_val_*``), and logs and registers
the model in MLflow (alias ``candidate``, tag ``facelab.model_md5`` = the file's md5).
Under several devices or workers (``facelab.nn.distributed``) the model is built and compiled in the strategy's
scope, a step takes ``batch_size`` faces on every replica with the learning rate scaled to match (sharpness-aware
steps and the weight average too: ``facelab.nn.sam``, ``callbacks.WeightAverage``), and only the chief writes files,
MLflow runs and registry versions.

Both stages share their set-up (``_training_stage``: strategy, seed, splits, the MLflow run with its
parameters and data sets, precision) and their training (``_train`` runs a ``TrainingJob``); each
keeps what differs: its model, targets, loss and summary figures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd

from facelab.atomic import atomic_path, write_json
from facelab.config import METRICS_DIR, PLOTS_DIR
from facelab.data import artifacts
from facelab.data.artifacts import EMOTION_MODEL, KEYPOINT_MODEL
from facelab.data.augmentation import emotion_augmenter, emotion_mixer
from facelab.errors import FacelabError
from facelab.formats import KEYPOINT_IMAGE_SIZE, mirror_axis
from facelab.nn import distributed, inference, input_pipeline, precision, training, tta
from facelab.nn.keras_files import save_model
from facelab.nn.resnet import build_emotion_model_from, build_keypoint_model_from
from facelab.reports.scoring import emotion_scores, keypoint_rmse
from facelab.tracking import provenance, registry, store
from facelab.tracking.provenance import phase

if TYPE_CHECKING:
    import tensorflow as tf

# The training run's tag naming the faces it learnt from: "synthetic" or the data file's name.
DATA_TAG = "facelab.data"


def data_label(section: dict) -> str:
    """``data.<task>`` as a label: "synthetic", or the file (or folder) name the faces came from."""
    return "synthetic" if section["source"] == "synthetic" else Path(section["path"]).name


def _write_history(history: dict, path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(history)
    frame["epoch"] = frame["epoch"].astype(int) + 1
    frame = frame[["epoch"] + [c for c in frame.columns if c != "epoch"]]
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def log_split(name: str, path: Path, split: dict[str, np.ndarray], context: str) -> str:
    """A data split as an MLflow dataset of the active run (digest = hash of its arrays); returns the digest."""
    targets = split["keypoints"] if "keypoints" in split else split["labels"]
    digest = artifacts.arrays_digest(split["images"], targets)[: store.FINGERPRINT_CHARS]
    store.log_dataset(name, split["images"], targets, context, str(path), digest)
    return digest


@contextlib.contextmanager
def _stage_run(stage: str, logged: dict, params: dict, chief: bool, splits: dict, phases: provenance.PhaseTimer):
    """The stage's MLflow run with its data sets on the chief; nothing on the other workers of a multi-worker run.

    ``splits``: name -> (path, arrays, MLflow context) of the data sets the stage trains on; ``phases``: the
    stage's timer, started before it loaded them.
    """
    if not chief:
        yield
        return
    with store.stage_run(stage, logged, params["tracking"]["experiment"], phases):
        with phase("log"):
            store.set_tags({DATA_TAG: data_label(params["data"][stage.split("_", 1)[1]])})
            for name, (path, split, context) in splits.items():
                log_split(name, path, split, context)
        yield


def _datasets(
    strategy,
    images: tuple[np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    seed: int,
    **train_options,
):
    """(train, val) datasets of global batches, sharded by data across workers; with several replicas the
    validation set leaves out its last ``len % replicas`` faces (``distributed.evenly_split``)."""
    batch = distributed.global_batch_size(batch_size, strategy)
    train_ds = input_pipeline.make_dataset(images[0], targets[0], batch, shuffle=True, seed=seed, **train_options)
    kept = distributed.evenly_split(len(images[1]), strategy)
    if not kept:
        raise FacelabError(
            f"{len(images[1])} validation faces cannot be split over {strategy.num_replicas_in_sync} replicas"
        )
    val_ds = input_pipeline.make_dataset(images[1][:kept], targets[1][:kept], batch, shuffle=False, seed=seed)
    return distributed.shard_by_data(train_ds, strategy), distributed.shard_by_data(val_ds, strategy)


@dataclass(frozen=True)
class TrainingJob:
    """One training to run (``_train``): the model and what it learns from, and where the result goes."""

    stage: str  # train_keypoints or train_emotion
    model: keras.Model  # built (in the strategy's scope), not compiled
    loss: Any  # a Keras loss (function or object)
    metrics: list
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset
    train_images: np.ndarray  # the training faces (batch-norm statistics are recomputed on them)
    policy: str  # the precision policy in force (``precision.set_precision``)
    model_path: Path  # models/<task>.keras
    registered_name: str  # the registered model's name (params' tracking.<task>_model)
    input_example: np.ndarray  # two validation faces: the logged model's signature
    description: str  # the registered version's description (the test-time averaging is added)
    tags: dict | None = None  # the registered version's tags


@dataclass(frozen=True)
class TrainingSetup:
    """What both training stages start from (``_training_stage``): devices, data, precision."""

    stage: str
    params: dict
    strategy: tf.distribute.Strategy
    chief: bool  # the one process that writes files, MLflow runs and registry versions
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    policy: str
    example: np.ndarray

    @property
    def cfg(self) -> dict:
        return self.params[self.stage]

    def datasets(self, targets: tuple[np.ndarray, np.ndarray], **train_options):
        """(train, val) datasets of the two splits' images with ``targets`` (``_datasets``), in the "load" phase."""
        images = (self.train["images"], self.val["images"])
        with phase("load"):
            return _datasets(
                self.strategy, images, targets, self.cfg["batch_size"], self.params["seed"], **train_options
            )

    def job(
        self,
        model: keras.Model,
        loss,
        metrics: list,
        datasets: tuple,
        model_path: Path,
        description: str,
        tags: dict | None = None,
    ) -> TrainingJob:
        """This stage's ``TrainingJob``: the given parts, with the set-up's faces, policy and input example,
        registered under the name params' ``tracking.<task>_model`` gives."""
        task = self.stage.split("_", 1)[1]
        train_ds, val_ds = datasets
        return TrainingJob(
            stage=self.stage,
            model=model,
            loss=loss,
            metrics=metrics,
            train_ds=train_ds,
            val_ds=val_ds,
            train_images=self.train["images"],
            policy=self.policy,
            model_path=model_path,
            registered_name=self.params["tracking"][f"{task}_model"],
            input_example=self.example,
            description=description,
            tags=tags,
        )

    def finish(self, summary: dict) -> dict:
        """Write ``metrics/<stage>.json`` and log its numbers as ``final.*`` MLflow metrics (chief only)."""
        with phase("save"):
            write_json(METRICS_DIR / f"{self.stage}.json", summary)
        with phase("log"):
            store.log_metrics({f"final.{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
        return summary


@contextlib.contextmanager
def _training_stage(stage: str, params: dict, logged_data: Callable[[dict, dict], dict]) -> Iterator[TrainingSetup]:
    """The set-up both training stages share, in this order: the strategy (before any TensorFlow op),
    the random seed (before anything random), the train and val splits, the MLflow run (chief only) with
    the logged parameters (profile, seed, the stage's section, then ``logged_data(params, train split)``)
    and the two splits as datasets, and the precision policy; the stage runs inside the MLflow run."""
    task = stage.split("_", 1)[1]
    seed = params["seed"]
    strategy = distributed.training_strategy()  # first: a multi-worker strategy must exist before any TF op
    chief = distributed.is_chief(strategy)
    keras.utils.set_random_seed(seed)
    files = artifacts.stage_files(stage)
    phases = provenance.start_phases()  # the stage's minutes count from here (the run's wall minutes too)
    with phase("load"):
        train = artifacts.load_split(files[f"{task}_train"])
        val = artifacts.load_split(files[f"{task}_val"])
    logged = {"profile": params["profile"], "seed": seed, stage: params[stage], **logged_data(params, train)}
    splits = {
        f"{task}_train": (files[f"{task}_train"], train, "training"),
        f"{task}_val": (files[f"{task}_val"], val, "validation"),
    }
    with _stage_run(stage, logged, params, chief, splits, phases):
        policy = precision.set_precision(params[stage]["precision"])
        example = val["images"][:2, :, :, None].astype(np.float32)
        yield TrainingSetup(stage, params, strategy, chief, train, val, policy, example)


def _train(job: TrainingJob, params: dict, strategy) -> tuple[keras.Model, dict, pd.DataFrame | None]:
    """Compile, fit and save; returns (on the chief) the saved model with its test-time averaging, the summary
    for ``metrics/<stage>.json`` and the per-epoch history; (the trained network, {}, None) on other workers."""
    stage = job.stage
    cfg = params[stage]
    chief = distributed.is_chief(strategy)
    n_train = len(job.train_images)
    batch = distributed.global_batch_size(cfg["batch_size"], strategy)
    per_epoch = input_pipeline.images_per_epoch(n_train, batch)
    steps_per_epoch = max(1, per_epoch // batch)
    lr = distributed.scaled_learning_rate(cfg["lr"], strategy)
    with strategy.scope(), phase("build"):
        job.model.compile(
            optimizer=training.make_optimizer_from(cfg, cfg["epochs"] * steps_per_epoch, lr),
            loss=job.loss,
            metrics=job.metrics,
        )
    if chief:
        with phase("log"):
            store.log_params({"devices": {**distributed.describe(strategy), "global_batch_size": batch, "lr": lr}})
        if strategy.num_replicas_in_sync > 1:
            print(
                f"[{stage}] {distributed.describe(strategy)['strategy']}: {strategy.num_replicas_in_sync} replicas, "
                f"global batch {batch}, learning rate {lr:g}",
                flush=True,
            )
    folder = distributed.worker_folder(training.run_folder(stage, {"params": params, "n_train": n_train}), chief)
    started = time.perf_counter()
    try:
        # epoch_timer adds each epoch's training and validation to their phases: "checkpoints" is the rest of
        # fit (restoring and saving its state every epoch, loading the best weights)
        with phase("checkpoints"):
            best, history, progress = training.fit(
                job.model,
                job.train_ds,
                job.val_ds,
                epochs=cfg["epochs"],
                steps_per_epoch=steps_per_epoch,
                images_per_epoch=per_epoch,
                folder=folder,
                resume=cfg["resume"],
                label=stage,
                early_stopping_patience=cfg["early_stopping_patience"],
                average_momentum=cfg["ema"],
                sam_rho=cfg["sam_rho"],
                sam_epochs=cfg["sam_epochs"],
                progressive=cfg.get("progressive"),  # emotion only
                callbacks=[store.epoch_logger(), provenance.epoch_timer(store.log_metrics)] if chief else [],
                show_progress=chief,
            )
    finally:
        distributed.release_worker_folder(folder, chief)
    if not chief:
        return best, {}, None
    seconds = time.perf_counter() - started
    if cfg["recompute_batchnorm"]:
        with phase("recompute_batchnorm"):
            best = training.recompute_batchnorm(best, job.train_images, cfg["batch_size"], params["seed"])
    with phase("build"):
        task = stage.split("_", 1)[1]
        coordinates = params["data"]["keypoints"]["coordinates"] if task == "keypoints" else "centres"
        served = tta.wrap(best, task, **cfg["tta"], mirror_axis=mirror_axis(int(best.input_shape[2]), coordinates))
    with phase("save"):
        save_model(served, job.model_path)
        frame = _write_history(history, PLOTS_DIR / f"{stage}_history.csv")
    best_row = frame.loc[frame["val_loss"].idxmin()]
    summary = {
        "best_epoch": int(best_row["epoch"]),
        "epochs_run": int(len(frame)),
        "best_val_loss": float(best_row["val_loss"]),
        "precision": job.policy,
    }
    # Timings differ on every run: MLflow only, never the git-tracked metrics.
    with phase("log"):
        store.log_metrics(
            {
                "final.train_seconds": round(seconds, 1),
                "final.images_per_second": round(float(np.median(progress.images_per_second)), 1),
            }
        )
    averaged = f"; test-time averaging: flip {cfg['tta']['flip']}, shift {cfg['tta']['shift_px']} px"
    with phase("register"):
        registry.log_and_register_keras(
            served,
            job.registered_name,
            job.input_example,
            job.description + averaged,
            job.tags,
            model_md5=artifacts.file_md5(job.model_path),
        )
    with phase("log"):
        store.log_artifacts(PLOTS_DIR / f"{stage}_history.csv", folder=stage)
    with phase("checkpoints"):
        training.finish_run(folder)
    return served, summary, frame


def score_averaging(
    served: keras.Model, task: str, score: Callable[[keras.Model], dict[str, float]]
) -> dict[str, float]:
    """``score(served)``, the saved model's validation figures; beside them, as MLflow metrics
    ``averaging.<setting>.val_<figure>`` (``tta.label``) and one printed line, the same figures of the network
    under each test-time averaging made of fewer of its views (``tta.parts``: none, the mirror image alone,
    the shifts alone), so a view that costs validation shows in every run."""
    setting = tta.settings(served)
    network = tta.unwrap(served)
    by_setting = {}
    for option in tta.parts(**setting):
        model = served if option == setting else tta.wrap(network, task, **option, mirror_axis=tta.axis(served))
        by_setting[tta.label(**option)] = score(model)
    served_label = tta.label(**setting)
    store.log_metrics({f"averaging.{n}.val_{f}": v for n, figures in by_setting.items() for f, v in figures.items()})
    for figure in by_setting[served_label]:
        shown = ", ".join(
            f"{name} {figures[figure]:.4f}{' (served)' if name == served_label else ''}"
            for name, figures in by_setting.items()
        )
        print(f"[train_{task}] validation {figure} by test-time averaging: {shown}", flush=True)
    return by_setting[served_label]


def _keypoint_data(params: dict, train: dict) -> dict:
    """What train_keypoints logs beside its own section: the missing-keypoint policy its faces went through and
    the coordinates' convention (its mirror views use it)."""
    return {f"data.keypoints.{name}": params["data"]["keypoints"][name] for name in ("missing", "coordinates")}


def run_keypoints(params: dict) -> dict:
    with _training_stage("train_keypoints", params, _keypoint_data) as setup:
        cfg, train, val = setup.cfg, setup.train, setup.val
        with setup.strategy.scope(), phase("build"):
            model = build_keypoint_model_from(cfg, KEYPOINT_IMAGE_SIZE)
        job = setup.job(
            model,
            training.KEYPOINT_LOSSES[cfg["loss"]],
            [training.masked_mse],
            setup.datasets((train["keypoints"], val["keypoints"])),
            KEYPOINT_MODEL,
            "ResNet-18 facial keypoints: 96x96 grayscale (0-255) -> 30 pixel coordinates",
        )
        served, summary, frame = _train(job, params, setup.strategy)
        if not setup.chief:
            return summary
        best_row = frame.loc[frame["val_loss"].idxmin()]
        summary["val_rmse_px"] = float(np.sqrt(best_row["val_masked_mse"]))
        # as evaluate scores it: what ideas are ranked on (the line above is the network alone, as Keras saw it)
        with phase("score"):
            served_figures = score_averaging(
                served,
                "keypoints",
                lambda model: {"rmse_px": keypoint_rmse(val["keypoints"], inference.predict(model, val["images"]))},
            )
        summary["served_val_rmse_px"] = served_figures["rmse_px"]
        return setup.finish(summary)


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: none (all 1), balanced (n / (k * count)) or its square root."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if mode == "none":
        return np.ones(num_classes, np.float32)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    return (weights / np.average(weights, weights=counts)).astype(np.float32)


def _emotion_data(params: dict, train: dict) -> dict:
    """What train_emotion logs beside its own section: the augmentation it trains with and the class list."""
    return {
        "augment.emotion": params["augment"]["emotion"],
        "data.emotion.classes": ",".join(str(c) for c in train["classes"]),
    }


def run_emotion(params: dict) -> dict:
    with _training_stage("train_emotion", params, _emotion_data) as setup:
        cfg, train, val, seed = setup.cfg, setup.train, setup.val, params["seed"]
        if cfg["progressive"]["epochs"] and distributed.is_multi_worker(setup.strategy):
            raise FacelabError(
                "train_emotion.progressive: progressive resizing trains on one worker only (set epochs: 0)"
            )
        classes = [str(c) for c in train["classes"]]
        num_classes = len(classes)
        input_size = int(train["images"].shape[1])
        with setup.strategy.scope(), phase("build"):
            model = build_emotion_model_from(cfg, num_classes, input_size)
        one_hot = np.eye(num_classes, dtype=np.float32)
        weights = class_weights(train["labels"], num_classes, cfg["class_weights"])
        datasets = setup.datasets(
            (one_hot[train["labels"]], one_hot[val["labels"]]),
            augmenter=emotion_augmenter(seed=seed, **params["augment"]["emotion"]),
            mixer=emotion_mixer(cfg["mixup"], seed),
            sample_weights=weights[train["labels"]],
        )
        job = setup.job(
            model,
            keras.losses.CategoricalCrossentropy(label_smoothing=cfg["label_smoothing"]),
            ["accuracy"],
            datasets,
            EMOTION_MODEL,
            f"ResNet-18 emotion: {input_size}x{input_size} grayscale (0-255) -> probabilities of {', '.join(classes)}",
            tags={"classes": ",".join(classes)},
        )
        served, summary, frame = _train(job, params, setup.strategy)
        if not setup.chief:
            return summary
        best_row = frame.loc[frame["val_loss"].idxmin()]
        summary["val_accuracy"] = float(best_row.get("val_accuracy", np.nan))

        def figures(model: keras.Model) -> dict[str, float]:
            scores = emotion_scores(val["labels"], inference.predict(model, val["images"]).argmax(axis=1), classes)
            return {"accuracy": scores["accuracy"], "f1_weighted": scores["f1_weighted"]}

        # as evaluate scores it: what ideas are ranked on (the line above is the network alone, as Keras saw it)
        with phase("score"):
            served_figures = score_averaging(served, "emotion", figures)
        summary["served_val_accuracy"] = served_figures["accuracy"]
        summary["served_val_f1_weighted"] = served_figures["f1_weighted"]
        summary["classes"] = classes
        return setup.finish(summary)
