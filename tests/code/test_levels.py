"""facelab results --level: minutes to a validation level, from per-epoch histories (no store needed)."""

from __future__ import annotations

import pandas as pd
import pytest

from facelab.errors import FacelabError
from facelab.reports.levels import column, level_table, minutes_to, parse_level
from facelab.reports.results import level_rows

# two runs' per-epoch histories: run "a" rises past 0.60 in its second epoch, run "b" never does
HISTORIES = {
    ("a", "val_accuracy"): {1: 0.50, 2: 0.61, 3: 0.58, 4: 0.66},
    ("a", "val_loss"): {1: 1.4, 2: 1.1, 3: 1.2, 4: 0.9},
    ("a", "epoch.train_minutes"): {1: 1.0, 2: 0.5, 3: 0.5, 4: 1.0},
    ("a", "epoch.val_minutes"): {1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1},
    ("b", "val_accuracy"): {1: 0.40, 2: 0.55},
    ("b", "val_loss"): {1: 1.6, 2: 1.3},
    ("b", "epoch.train_minutes"): {1: 2.0, 2: 2.0},
    ("b", "epoch.val_minutes"): {1: 0.0, 2: 0.0},
}


def _history(run_id: str, metric: str) -> dict[int, float]:
    return HISTORIES.get((run_id, metric), {})


def _rows() -> pd.DataFrame:
    common = {"task": "emotion-7", "date": "2026-12-07", "profile": "fast-emotion-7", "commit": "0123456"}
    return pd.DataFrame(
        [
            {**common, "seed": "42", "experiment": "fe7-s42", "run": "a"},
            {**common, "seed": "1", "experiment": "fe7-s1", "run": "b"},
            {**common, "seed": "7", "experiment": "keypoints-only", "run": "c"},  # logged none of the metrics
        ]
    )


def test_parse_level_reads_metric_and_value_and_rejects_anything_else():
    assert parse_level("val_accuracy=0.65") == ("val_accuracy", 0.65)
    for bad in ("val_accuracy", "=0.6", "val_accuracy=high"):
        with pytest.raises(FacelabError, match="METRIC=VALUE"):
            parse_level(bad)


def test_minutes_count_training_and_validation_to_the_end_of_the_first_epoch_at_the_level():
    minutes = {1: 1.1, 2: 0.6, 3: 0.6, 4: 1.1}
    assert minutes_to(HISTORIES[("a", "val_accuracy")], minutes, 0.60, lower=False) == pytest.approx(1.7)
    assert minutes_to(HISTORIES[("a", "val_accuracy")], minutes, 0.65, lower=False) == pytest.approx(3.4)
    assert minutes_to(HISTORIES[("a", "val_accuracy")], minutes, 0.70, lower=False) is None
    assert minutes_to(HISTORIES[("a", "val_loss")], minutes, 1.15, lower=True) == pytest.approx(1.7)
    assert minutes_to(HISTORIES[("a", "val_accuracy")], {1: 1.1}, 0.60, lower=False) is None  # epoch 2 untimed


def test_level_table_has_a_row_per_run_that_logged_the_metric():
    levels = [("val_accuracy", 0.60), ("val_loss", 1.0)]
    table = level_table(_rows(), levels, _history)
    assert list(table["experiment"]) == ["fe7-s42", "fe7-s1"]
    a, b = table.iloc[0], table.iloc[1]
    assert a[column("val_accuracy", 0.60)] == pytest.approx(1.7)
    assert a[column("val_loss", 1.0)] == pytest.approx(3.4)  # a loss reaches a level by falling to it
    assert pd.isna(b[column("val_accuracy", 0.60)])
    assert (a["epochs"], a["loop min"], a["best val_accuracy"], a["best val_loss"]) == (
        4,
        pytest.approx(3.4),
        0.66,
        0.9,
    )
    assert (
        column("val_loss", 1.0) == "min to val_loss <= 1"
        and column("val_accuracy", 0.6) == "min to val_accuracy >= 0.6"
    )


def test_level_rows_carry_each_training_run_s_task_id_and_experiment():
    runs = pd.DataFrame(
        [
            {
                "run_id": "abc",
                "tags.facelab.stage": "train_emotion",
                "tags.dvc.exp_name": "fe7-s42",
                "start_time": pd.Timestamp("2026-12-07T06:00Z"),
                "params.profile": "fast-emotion-7",
                "params.seed": "42",
                "params.data.emotion.classes": "anger,disgust,fear,happiness,sadness,surprise,neutral",
                "tags.facelab.data": "fer2013.csv.gz",
                "tags.git_commit": "0123456789",
            }
        ]
    )
    rows = level_rows(runs)
    assert (rows.iloc[0]["task"], rows.iloc[0]["run"], rows.iloc[0]["experiment"]) == ("emotion-7", "abc", "fe7-s42")
    assert level_rows(runs.iloc[0:0]).empty
