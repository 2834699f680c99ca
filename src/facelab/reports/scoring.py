"""Evaluation metrics: keypoint RMSE in pixels, emotion F1/accuracy/confusion. numpy + scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from facelab.formats import KEYPOINT_NAMES


def keypoint_rmse(true: np.ndarray, pred: np.ndarray) -> float:
    """RMSE in pixels over every coordinate that exists (NaN in ``true`` = missing)."""
    err = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
    present = ~np.isnan(err)
    if not present.any():
        return float("nan")
    return float(np.sqrt(np.mean(np.square(err[present]))))


def keypoint_rmse_per_point(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE in pixels of each named keypoint (its x and y coordinates together)."""
    true = np.asarray(true).reshape(len(true), -1, 2)
    pred = np.asarray(pred).reshape(len(pred), -1, 2)
    return {name: keypoint_rmse(true[:, i], pred[:, i]) for i, name in enumerate(KEYPOINT_NAMES)}


def mean_keypoints_baseline(train_keypoints: np.ndarray, test_keypoints: np.ndarray) -> float:
    """RMSE of always predicting the training set's mean layout: the bar a model must beat."""
    mean = np.nanmean(train_keypoints, axis=0)
    return keypoint_rmse(test_keypoints, np.broadcast_to(mean, test_keypoints.shape))


def emotion_scores(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Weighted F1, accuracy, macro F1, the per-class report and the confusion matrix."""
    labels = list(range(len(classes)))
    report = classification_report(true, pred, labels=labels, target_names=classes, output_dict=True, zero_division=0)
    return {
        "f1_weighted": float(f1_score(true, pred, labels=labels, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(true, pred)),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in classes},
        "confusion": confusion_matrix(true, pred, labels=labels).tolist(),
    }


def majority_baseline(train_labels: np.ndarray, test_labels: np.ndarray, num_classes: int) -> dict:
    """Weighted F1 and accuracy of always predicting the most common training class."""
    majority = int(np.bincount(train_labels, minlength=num_classes).argmax())
    pred = np.full_like(test_labels, majority)
    labels = list(range(num_classes))
    return {
        "f1_weighted": float(f1_score(test_labels, pred, labels=labels, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(test_labels, pred)),
    }
