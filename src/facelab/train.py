"""The two training stages: ``train_keypoints`` and ``train_emotion``.

Each builds the shared ResNet-18 with its head, trains it with ``training.fit`` on the
prepared (and, for keypoints, augmented) arrays, wraps the best model in its test-time averaging
(``train_<task>.tta``, ``facelab.tta``: the saved model is the one evaluate scores and predict
serves), writes it to ``models/``, the per-epoch history to ``plots/`` and training metrics to
``metrics/`` (no timings: those vary run to run and go to MLflow only), and logs and registers
the model in MLflow (alias ``candidate``, tag ``facelab.model_md5`` = the file's md5).
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from facelab import artifacts, tracking, training, tta
from facelab.artifacts import EMOTION_MODEL, KEYPOINT_MODEL
from facelab.atomic import atomic_path, write_json
from facelab.augmentation import emotion_augmenter
from facelab.config import METRICS_DIR, PLOTS_DIR
from facelab.formats import KEYPOINT_IMAGE_SIZE
from facelab.model import build_emotion_model, build_keypoint_model


def save_model(model: keras.Model, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


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
    digest = artifacts.arrays_digest(split["images"], targets)[:tracking.FINGERPRINT_CHARS]
    tracking.log_dataset(name, split["images"], targets, context, str(path), digest)
    return digest


def _train(stage: str, params: dict, model: keras.Model, loss, metrics: list, train_ds, val_ds,
           n_train: int, policy: str, model_path: Path, registered_name: str, input_example: np.ndarray,
           description: str, tags: dict | None = None) -> tuple[keras.Model, dict, pd.DataFrame]:
    cfg = params[stage]
    per_epoch = training.images_per_epoch(n_train, cfg["batch_size"])
    steps_per_epoch = max(1, per_epoch // cfg["batch_size"])
    model.compile(optimizer=training.make_optimizer(cfg["lr"], cfg["lr_schedule"], cfg["weight_decay"],
                                                    cfg["epochs"] * steps_per_epoch, cfg["optimizer"]),
                  loss=loss, metrics=metrics)
    folder = training.run_folder(stage, {"params": params, "n_train": n_train})
    started = time.perf_counter()
    best, history, progress = training.fit(
        model, train_ds, val_ds, epochs=cfg["epochs"], steps_per_epoch=steps_per_epoch,
        images_per_epoch=per_epoch, folder=folder,
        resume=cfg["resume"], label=stage, early_stopping_patience=cfg["early_stopping_patience"],
        callbacks=[tracking.epoch_logger()])
    seconds = time.perf_counter() - started
    served = tta.wrap(best, stage.split("_", 1)[1], **cfg["tta"])
    save_model(served, model_path)
    frame = _write_history(history, PLOTS_DIR / f"{stage}_history.csv")
    best_row = frame.loc[frame["val_loss"].idxmin()]
    summary = {"best_epoch": int(best_row["epoch"]), "epochs_run": int(len(frame)),
               "best_val_loss": float(best_row["val_loss"]), "precision": policy}
    # Timings differ on every run: MLflow only, never the git-tracked metrics.
    tracking.log_metrics({"final.train_seconds": round(seconds, 1),
                          "final.images_per_second": round(float(np.median(progress.images_per_second)), 1)})
    averaged = f"; test-time averaging: flip {cfg['tta']['flip']}, shift {cfg['tta']['shift_px']} px"
    tracking.log_and_register_keras(served, registered_name, input_example, description + averaged, tags,
                                    model_md5=artifacts.file_md5(model_path))
    tracking.log_artifacts(PLOTS_DIR / f"{stage}_history.csv", folder=stage)
    training.finish_run(folder)
    return best, summary, frame


def run_keypoints(params: dict) -> dict:
    cfg = params["train_keypoints"]
    seed = params["seed"]
    keras.utils.set_random_seed(seed)
    files = artifacts.stage_files("train_keypoints")
    train = artifacts.load_split(files["keypoints_train"])
    val = artifacts.load_split(files["keypoints_val"])
    logged = {"seed": seed, "train_keypoints": cfg, "data.keypoints.missing": params["data"]["keypoints"]["missing"]}
    with tracking.stage_run("train_keypoints", logged, params["tracking"]["experiment"]):
        log_split("keypoints_train", files["keypoints_train"], train, "training")
        log_split("keypoints_val", files["keypoints_val"], val, "validation")
        policy = training.set_precision(cfg["precision"])
        with training.distribution_strategy().scope():
            model = build_keypoint_model(KEYPOINT_IMAGE_SIZE, width=cfg["width"], stem=cfg["stem"],
                                         dropout=cfg["dropout"], head=cfg["head"])
        train_ds = training.make_dataset(train["images"], train["keypoints"], cfg["batch_size"], shuffle=True,
                                         seed=seed)
        val_ds = training.make_dataset(val["images"], val["keypoints"], cfg["batch_size"], shuffle=False, seed=seed)
        example = val["images"][:2, :, :, None].astype(np.float32)
        _, summary, frame = _train("train_keypoints", params, model, training.KEYPOINT_LOSSES[cfg["loss"]],
                                   [training.masked_mse], train_ds, val_ds,
                                   len(train["images"]), policy, KEYPOINT_MODEL,
                                   params["tracking"]["keypoints_model"], example,
                                   "ResNet-18 facial keypoints: 96x96 grayscale (0-255) -> 30 pixel coordinates")
        best_row = frame.loc[frame["val_loss"].idxmin()]
        summary["val_rmse_px"] = float(np.sqrt(best_row["val_masked_mse"]))
        write_json(METRICS_DIR / "train_keypoints.json", summary)
        tracking.log_metrics({f"final.{k}": v for k, v in summary.items() if not isinstance(v, str)})
    return summary


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: none (all 1), balanced (n / (k * count)) or its square root."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if mode == "none":
        return np.ones(num_classes, np.float32)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    return (weights / np.average(weights, weights=counts)).astype(np.float32)


def run_emotion(params: dict) -> dict:
    cfg = params["train_emotion"]
    seed = params["seed"]
    keras.utils.set_random_seed(seed)
    files = artifacts.stage_files("train_emotion")
    train = artifacts.load_split(files["emotion_train"])
    val = artifacts.load_split(files["emotion_val"])
    classes = [str(c) for c in train["classes"]]
    num_classes = len(classes)
    logged = {"seed": seed, "train_emotion": cfg, "augment.emotion": params["augment"]["emotion"],
              "data.emotion.classes": ",".join(classes)}
    with tracking.stage_run("train_emotion", logged, params["tracking"]["experiment"]):
        log_split("emotion_train", files["emotion_train"], train, "training")
        log_split("emotion_val", files["emotion_val"], val, "validation")
        policy = training.set_precision(cfg["precision"])
        input_size = int(train["images"].shape[1])
        with training.distribution_strategy().scope():
            model = build_emotion_model(num_classes, input_size=input_size, image_size=cfg["image_size"],
                                        width=cfg["width"], stem=cfg["stem"], dropout=cfg["dropout"])
        one_hot = np.eye(num_classes, dtype=np.float32)
        weights = class_weights(train["labels"], num_classes, cfg["class_weights"])
        augmenter = emotion_augmenter(seed=seed, **params["augment"]["emotion"])
        train_ds = training.make_dataset(train["images"], one_hot[train["labels"]], cfg["batch_size"], shuffle=True,
                                         seed=seed, augmenter=augmenter, sample_weights=weights[train["labels"]])
        val_ds = training.make_dataset(val["images"], one_hot[val["labels"]], cfg["batch_size"], shuffle=False,
                                       seed=seed)
        example = val["images"][:2, :, :, None].astype(np.float32)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg["label_smoothing"])
        _, summary, frame = _train("train_emotion", params, model, loss, ["accuracy"], train_ds, val_ds,
                                   len(train["images"]), policy, EMOTION_MODEL, params["tracking"]["emotion_model"],
                                   example, f"ResNet-18 emotion: {input_size}x{input_size} grayscale (0-255) -> "
                                            f"probabilities of {', '.join(classes)}",
                                   tags={"classes": ",".join(classes)})
        best_row = frame.loc[frame["val_loss"].idxmin()]
        summary["val_accuracy"] = float(best_row.get("val_accuracy", np.nan))
        summary["classes"] = classes
        write_json(METRICS_DIR / "train_emotion.json", summary)
        tracking.log_metrics({f"final.{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    return summary
