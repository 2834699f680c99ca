"""The ``evaluate`` stage: both models on their held-out test sets, and the champion decision.

Writes ``metrics/evaluate.json`` (keypoint RMSE in pixels overall and per keypoint, emotion
weighted F1, accuracy, macro F1 and per-class report, each beside its trivial baseline, and the
precision each model computed in), ``plots/emotion_predictions.csv`` for ``dvc plots``'
confusion template, and pictures under ``reports/evaluate``. The models run through
``inference.predict`` exactly as ``facelab predict`` and the served analyser run them (their
test-time averaging is inside the saved models).

In MLflow it logs the test sets as datasets, finds the registered version of each
``models/*.keras`` by the file's md5, tags it with its test metric and what it was measured on,
and applies the champion rules (``champions.promote``). The versions holding ``champion``
afterwards are written to ``models/champions.json``: the file ``combine`` depends on, so that
moving ``champion`` makes ``combine`` stale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from facelab.atomic import atomic_path, write_json
from facelab.config import METRICS_DIR, PLOTS_DIR, REPORTS_DIR, in_queued_experiment
from facelab.data import artifacts
from facelab.errors import FacelabError
from facelab.formats import KEYPOINT_NAMES
from facelab.nn import inference
from facelab.reports import pictures
from facelab.reports.scoring import (
    emotion_scores,
    keypoint_rmse,
    keypoint_rmse_per_point,
    majority_baseline,
    mean_keypoints_baseline,
)
from facelab.tracking import champions, registry, store
from facelab.tracking.provenance import phase

STAGE = "evaluate"
# The test figures logged on each model's training run as test.<name> (facelab results reads them there).
TEST_PREFIX = "test."
TEST_FIGURES = {"keypoints": ("rmse_px",), "emotion": ("accuracy", "f1_weighted", "f1_macro")}
# metric -> higher is better?
METRIC_DIRECTIONS = {
    "keypoints.rmse_px": False,
    "emotion.f1_weighted": True,
    "emotion.accuracy": True,
    "emotion.f1_macro": True,
}


def test_set_tags(task: str, test: dict[str, np.ndarray], model) -> dict[str, str]:
    """What a test figure of ``task`` is measured on (``champions.task_tags``): test arrays, labels, input size."""
    targets = test["keypoints"] if task == "keypoints" else test["labels"]
    labels = ",".join(KEYPOINT_NAMES) if task == "keypoints" else ",".join(str(c) for c in test["classes"])
    size = inference.input_size(model)
    return champions.task_tags(
        artifacts.arrays_digest(test["images"], targets)[: store.FINGERPRINT_CHARS], labels, f"{size}x{size}"
    )


def evaluate_keypoints(model, test: dict, train: dict) -> tuple[dict, np.ndarray]:
    pred = inference.predict(model, test["images"])
    result = {
        "rmse_px": keypoint_rmse(test["keypoints"], pred),
        "baseline_mean_rmse_px": mean_keypoints_baseline(train["keypoints"], test["keypoints"]),
        "test_faces": int(len(test["images"])),
        "per_keypoint_rmse_px": keypoint_rmse_per_point(test["keypoints"], pred),
    }
    return result, pred


def evaluate_emotion(model, test: dict, train: dict) -> tuple[dict, np.ndarray, list]:
    classes = [str(c) for c in test["classes"]]
    pred = inference.predict(model, test["images"]).argmax(axis=1)
    scores = emotion_scores(test["labels"], pred, classes)
    baseline = majority_baseline(train["labels"], test["labels"], len(classes))
    result = {
        "f1_weighted": scores["f1_weighted"],
        "accuracy": scores["accuracy"],
        "f1_macro": scores["f1_macro"],
        "baseline_majority_f1_weighted": baseline["f1_weighted"],
        "baseline_majority_accuracy": baseline["accuracy"],
        "test_faces": int(len(test["labels"])),
        "per_class": scores["per_class"],
    }
    return result, pred, scores["confusion"]


def registered_version(name: str, model_path):
    """The registry version logged from ``model_path`` (found by the file's md5), or a FacelabError."""
    md5 = artifacts.file_md5(model_path)
    found = registry.version_by_model_md5(name, md5)
    if found is None:
        raise FacelabError(
            f"{model_path} (md5 {md5}) is not a registered version of {name} in "
            f"{store.tracking_uri()}: retrain it there (dvc repro -f -s train_<task>)"
        )
    return found


def test_figures(task: str, result: dict) -> dict[str, float]:
    """The test figures of ``task`` a training run gets beside its validation figures (``test.<name>``)."""
    return {f"{TEST_PREFIX}{k}": v for k, v in result.items() if k in TEST_FIGURES[task]}


def run(params: dict) -> dict:
    cfg = params[STAGE]
    names = params["tracking"]
    files = artifacts.stage_files(STAGE)
    reports = REPORTS_DIR / STAGE
    with store.stage_run(STAGE, {"evaluate": cfg}, names["experiment"]):
        with phase("load"):
            kp_model = inference.load_model(files["keypoints_model"])
            em_model = inference.load_model(files["emotion_model"])
            kp_test, kp_train = (artifacts.load_split(files[f"keypoints_{split}"]) for split in ("test", "train"))
            em_test, em_train = (artifacts.load_split(files[f"emotion_{split}"]) for split in ("test", "train"))
        with phase("score"):  # the models' predictions on the test faces and their figures
            kp_result, kp_pred = evaluate_keypoints(kp_model, kp_test, kp_train)
            em_result, em_pred, confusion = evaluate_emotion(em_model, em_test, em_train)
        classes = [str(c) for c in em_test["classes"]]
        metrics = {
            "keypoints": kp_result,
            "emotion": em_result,
            "precision": {"keypoints": inference.precision(kp_model), "emotion": inference.precision(em_model)},
        }
        with phase("save"):
            write_json(METRICS_DIR / "evaluate.json", metrics)
            frame = pd.DataFrame(
                {"actual": np.array(classes)[em_test["labels"]], "predicted": np.array(classes)[em_pred]}
            )
            with atomic_path(PLOTS_DIR / "emotion_predictions.csv", suffix=".csv") as tmp:
                frame.to_csv(tmp, index=False)
        with phase("pictures"):
            pictures.confusion_png(
                reports / "confusion.png",
                confusion,
                classes,
                f"emotion on the test set: weighted F1 {em_result['f1_weighted']:.3f}, "
                f"accuracy {em_result['accuracy']:.3f}",
            )
        with phase("save"):
            write_json(reports / "confusion.json", {"classes": classes, "matrix": confusion})
        shown = min(16, len(kp_test["images"]))
        with phase("pictures"):
            pictures.face_grid(
                reports / "keypoints_test.png",
                kp_test["images"][:shown],
                keypoints=kp_test["keypoints"][:shown],
                predicted=kp_pred[:shown],
                columns=4,
                suptitle=f"test faces: true (green) vs predicted (red), RMSE {kp_result['rmse_px']:.2f} px",
            )

        with phase("log"):
            store.log_metrics(
                {"keypoints": dict(kp_result), "emotion": {k: v for k, v in em_result.items() if k != "per_class"}}
            )
            store.log_artifacts(METRICS_DIR / "evaluate.json", reports, folder=STAGE)

        decisions, chosen = [], {}
        queued = in_queued_experiment()
        for task, model, test, metric in (
            ("keypoints", kp_model, kp_test, cfg["champion_metric_keypoints"]),
            ("emotion", em_model, em_test, cfg["champion_metric_emotion"]),
        ):
            name = names[f"{task}_model"]
            task_tags = test_set_tags(task, test, model)
            targets = test["keypoints"] if task == "keypoints" else test["labels"]
            with phase("log"):
                store.log_dataset(
                    f"{task}_test",
                    test["images"],
                    targets,
                    "test",
                    str(files[f"{task}_test"]),
                    task_tags[champions.TEST_SET_TAG],
                )
            with phase("register"):
                found = registered_version(name, files[f"{task}_model"])
            # the test figures on the model's training run too, so one run holds what the results table needs
            if found.run_id:
                with phase("log"):
                    store.log_run_metrics(found.run_id, test_figures(task, metrics[task]))
                    store.set_tags({f"facelab.{task}_training_run": found.run_id})
            with phase("register"):
                decision = champions.promote(
                    name,
                    int(found.version),
                    metric,
                    _lookup(metrics, metric),
                    METRIC_DIRECTIONS[metric],
                    task_tags,
                    queued=queued,
                )
            decisions.append(decision)
            chosen[task] = {"name": name, "version": decision["champion"]}
        with phase("save"):
            write_json(reports / "champion.json", decisions)
            write_json(artifacts.CHAMPIONS_FILE, chosen)
        for decision in decisions:
            verb = "is now" if decision["promoted"] else "stays out of"
            print(
                f"[evaluate] {decision['model']} v{decision['version']} {verb} champion "
                f"({decision['rule']}): {decision['reason']}"
            )
    return metrics


def _lookup(metrics: dict, dotted: str) -> float:
    node = metrics
    for part in dotted.split("."):
        node = node[part]
    return float(node)
