"""Evaluation metrics on hand-checked arrays."""

import numpy as np
import pytest

from facelab.reports.scoring import (
    emotion_scores,
    keypoint_rmse,
    keypoint_rmse_per_point,
    majority_baseline,
    mean_keypoints_baseline,
)


def test_rmse_in_pixels():
    true = np.zeros((2, 30))
    pred = np.full((2, 30), 3.0)
    assert keypoint_rmse(true, pred) == pytest.approx(3.0)


def test_rmse_ignores_missing_coordinates():
    true = np.zeros((1, 30))
    true[0, :2] = np.nan
    pred = np.zeros((1, 30))
    pred[0, :2] = 100.0  # error only where the truth is missing
    assert keypoint_rmse(true, pred) == 0.0


def test_per_keypoint_rmse_names_each_point():
    true = np.zeros((1, 30))
    pred = np.zeros((1, 30))
    pred[0, 0:2] = (3, 4)  # left_eye_center off by a 3-4-5 triangle
    per = keypoint_rmse_per_point(true, pred)
    assert len(per) == 15
    assert per["left_eye_center"] == pytest.approx(np.sqrt((9 + 16) / 2))
    assert per["nose_tip"] == 0


def test_mean_baseline_beats_nothing_but_is_finite():
    rng = np.random.default_rng(0)
    train, test = rng.normal(48, 5, (50, 30)), rng.normal(48, 5, (20, 30))
    assert 3 < mean_keypoints_baseline(train, test) < 7


def test_emotion_scores():
    true = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 0, 2, 1])
    scores = emotion_scores(true, pred, ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["confusion"] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert set(scores["per_class"]) == {"a", "b", "c"}
    assert 0 < scores["f1_weighted"] < 1


def test_majority_baseline():
    result = majority_baseline(np.array([1, 1, 1, 0]), np.array([1, 0, 1, 2]), 3)
    assert result["accuracy"] == 0.5
