"""facelab results: the tables built from MLflow's search_runs frame (no store needed)."""

from __future__ import annotations

import pandas as pd

from facelab.reports.results import markdown, panel_figure, tables


def _runs() -> pd.DataFrame:
    common = {
        "tags.git_commit": "0123456789abcdef",
        "tags.facelab.cpu_model": "AMD EPYC",
        "tags.facelab.cores": "2",
        "metrics.run.wall_minutes": 25.0,
        "metrics.run.cpu_minutes": 48.0,
        "metrics.final.images_per_second": 500.0,
    }
    rows = [
        {
            **common,
            "tags.facelab.stage": "train_emotion",
            "start_time": pd.Timestamp("2026-12-03T06:00Z"),
            "params.profile": "quick-emotion-5",
            "params.seed": "42",
            "params.data.emotion.classes": "anger,disgust,sadness,happiness,surprise",
            "tags.facelab.data": "fer2013.csv.gz",
            "metrics.final.served_val_accuracy": 0.81,
            "metrics.final.served_val_f1_weighted": 0.809,
            "metrics.test.accuracy": 0.817,
            "metrics.test.f1_weighted": 0.8171,
        },
        {  # a candidate: stopped at training, no test figure
            **common,
            "tags.facelab.stage": "train_emotion",
            "start_time": pd.Timestamp("2026-12-02T06:00Z"),
            "params.profile": "quick-emotion-7",
            "params.seed": "1",
            "params.data.emotion.classes": "anger,disgust,fear,happiness,sadness,surprise,neutral",
            "tags.facelab.data": "fer2013.csv.gz",
            "metrics.final.served_val_accuracy": 0.67,
        },
        {
            **common,
            "tags.facelab.stage": "train_keypoints",
            "start_time": pd.Timestamp("2026-12-03T06:00Z"),
            "params.profile": "quick-emotion-5",
            "params.seed": "42",
            "tags.facelab.data": "synthetic",
            "metrics.final.served_val_rmse_px": 2.0,
        },
    ]
    return pd.DataFrame(rows)


def test_tables_split_emotion_by_class_count_and_leave_out_synthetic_runs():
    found = tables(_runs())
    assert list(found) == ["emotion-5", "emotion-7"]
    five = found["emotion-5"].iloc[0]
    assert (five["profile"], five["seed"], five["commit"], five["date"]) == (
        "quick-emotion-5",
        "42",
        "0123456",
        "2026-12-03",
    )
    assert five["test weighted F1"] == 0.8171 and five["wall min"] == 25.0
    assert pd.isna(found["emotion-7"].iloc[0]["test accuracy"])
    assert "keypoints" in tables(_runs(), include_synthetic=True)


def test_evaluated_only_keeps_the_runs_with_a_test_figure():
    found = tables(_runs(), evaluated_only=True)
    assert list(found) == ["emotion-5"]


def test_markdown_rounds_and_marks_missing_figures():
    text = markdown(tables(_runs()))
    assert "### emotion-7" in text
    assert "| 0.817 | 0.817 |" in text  # test accuracy and weighted F1, 3 decimals
    assert "| – |" in text  # the candidate's missing test figures
    assert panel_figure("emotion-7") == ("val accuracy", "test accuracy", True)
    assert panel_figure("keypoints")[2] is False
