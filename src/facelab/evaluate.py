"""The ``evaluate`` stage: both models on their held-out test sets, and the champion decision.

Writes ``metrics/evaluate.json`` (keypoint RMSE in pixels overall and per keypoint, emotion
weighted F1, accuracy, macro F1 and per-class report, each beside its trivial baseline),
``plots/emotion_predictions.csv`` for ``dvc plots``' confusion template, and pictures under
``reports/evaluate``. In MLflow it tags each registered version with its test metric and
moves ``champion`` to it only when that metric is no worse than the current champion's.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd

from facelab import inference, tracking, viz
from facelab.atomic import atomic_path, write_json
from facelab.config import AUGMENTED_DIR, METRICS_DIR, PLOTS_DIR, PREPARED_DIR, REPORTS_DIR
from facelab.metrics import (emotion_scores, keypoint_rmse, keypoint_rmse_per_point, majority_baseline,
                             mean_keypoints_baseline)
from facelab.prepare import load_split
from facelab.train import EMOTION_MODEL, KEYPOINT_MODEL, registry_ref_path

# metric -> higher is better?
METRIC_DIRECTIONS = {"keypoints.rmse_px": False, "emotion.f1_weighted": True, "emotion.accuracy": True,
                     "emotion.f1_macro": True}


def load_local(path) -> keras.Model:
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def evaluate_keypoints(model: keras.Model, tta_flip: bool) -> tuple[dict, np.ndarray, dict]:
    test = load_split(PREPARED_DIR / "keypoints_test.npz")
    train = load_split(AUGMENTED_DIR / "keypoints_train.npz")
    pred = inference.predict_keypoints(model, test["images"], tta_flip)
    result = {"rmse_px": keypoint_rmse(test["keypoints"], pred),
              "baseline_mean_rmse_px": mean_keypoints_baseline(train["keypoints"], test["keypoints"]),
              "test_faces": int(len(test["images"])),
              "per_keypoint_rmse_px": keypoint_rmse_per_point(test["keypoints"], pred)}
    return result, pred, test


def evaluate_emotion(model: keras.Model, tta_flip: bool) -> tuple[dict, list[str], np.ndarray, np.ndarray, list]:
    test = load_split(PREPARED_DIR / "emotion_test.npz")
    train = load_split(PREPARED_DIR / "emotion_train.npz")
    classes = [str(c) for c in test["classes"]]
    probs = inference.predict_emotion(model, test["images"], tta_flip)
    pred = probs.argmax(axis=1)
    scores = emotion_scores(test["labels"], pred, classes)
    baseline = majority_baseline(train["labels"], test["labels"], len(classes))
    result = {"f1_weighted": scores["f1_weighted"], "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"],
              "baseline_majority_f1_weighted": baseline["f1_weighted"],
              "baseline_majority_accuracy": baseline["accuracy"],
              "test_faces": int(len(test["labels"])), "per_class": scores["per_class"]}
    return result, classes, test["labels"], pred, scores["confusion"]


def run(params: dict) -> dict:
    cfg = params["evaluate"]
    names = params["tracking"]
    reports = REPORTS_DIR / "evaluate"
    with tracking.stage_run("evaluate", {"evaluate": cfg}, names["experiment"]):
        kp_result, kp_pred, kp_test = evaluate_keypoints(load_local(KEYPOINT_MODEL), cfg["tta_flip"])
        em_result, classes, em_true, em_pred, confusion = evaluate_emotion(load_local(EMOTION_MODEL),
                                                                           cfg["tta_flip"])
        metrics = {"keypoints": kp_result, "emotion": em_result}
        write_json(METRICS_DIR / "evaluate.json", metrics)

        frame = pd.DataFrame({"actual": np.array(classes)[em_true], "predicted": np.array(classes)[em_pred]})
        with atomic_path(PLOTS_DIR / "emotion_predictions.csv", suffix=".csv") as tmp:
            frame.to_csv(tmp, index=False)
        viz.confusion_png(reports / "confusion.png", confusion, classes,
                          f"emotion on the test set: weighted F1 {em_result['f1_weighted']:.3f}, "
                          f"accuracy {em_result['accuracy']:.3f}")
        write_json(reports / "confusion.json", {"classes": classes, "matrix": confusion})
        shown = min(16, len(kp_test["images"]))
        viz.face_grid(reports / "keypoints_test.png", kp_test["images"][:shown], keypoints=kp_test["keypoints"][:shown],
                      predicted=kp_pred[:shown], columns=4,
                      suptitle=f"test faces: true (green) vs predicted (red), RMSE {kp_result['rmse_px']:.2f} px")

        tracking.log_metrics({"keypoints": {k: v for k, v in kp_result.items()},
                              "emotion": {k: v for k, v in em_result.items() if k != "per_class"}})
        tracking.log_artifacts(METRICS_DIR / "evaluate.json", reports, folder="evaluate")

        decisions = []
        for model_path, metric in ((KEYPOINT_MODEL, cfg["champion_metric_keypoints"]),
                                   (EMOTION_MODEL, cfg["champion_metric_emotion"])):
            ref = json.loads(registry_ref_path(model_path).read_text())
            value = _lookup(metrics, metric)
            decisions.append(tracking.promote_if_no_worse(ref["name"], ref["version"], metric, value,
                                                          METRIC_DIRECTIONS[metric]))
        write_json(reports / "champion.json", decisions)
        for decision in decisions:
            verb = "is now" if decision["promoted"] else "stays out of"
            print(f"[evaluate] {decision['model']} v{decision['version']} {verb} champion: {decision['reason']}")
    return metrics


def _lookup(metrics: dict, dotted: str) -> float:
    node = metrics
    for part in dotted.split("."):
        node = node[part]
    return float(node)
