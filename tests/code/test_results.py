"""facelab results: the tables built from MLflow's search_runs frame (no store needed)."""

from __future__ import annotations

import pandas as pd

from facelab.reports.results import experiment_minutes, markdown, panel_figure, phase_table, tables


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


def _stage_runs() -> pd.DataFrame:
    """Stage runs as search_runs gives them, newest first: two that timed their phases, one from before."""
    return pd.DataFrame(
        [
            {
                "run_id": "bbbbbbbb1234",
                "start_time": pd.Timestamp("2026-12-03T06:30Z"),
                "tags.facelab.stage": "evaluate",
                "metrics.run.wall_minutes": 1.5,
                "metrics.minutes.load": 0.5,
                "metrics.minutes.score": 0.75,
                "metrics.minutes.other": 0.25,
            },
            {
                "run_id": "aaaaaaaa1234",
                "start_time": pd.Timestamp("2026-12-03T06:00Z"),
                "tags.facelab.stage": "train_emotion",
                "params.profile": "quick-emotion-5",
                "metrics.run.wall_minutes": 25.0,
                "metrics.minutes.other": 0.5,
                "metrics.minutes.validate": 2.0,
                "metrics.minutes.train": 20.0,
                "metrics.minutes.load": 0.25,
                "metrics.minutes.checkpoints": 2.25,
            },
            {  # before phases were recorded
                "run_id": "cccccccc1234",
                "start_time": pd.Timestamp("2026-12-01T06:00Z"),
                "tags.facelab.stage": "train_emotion",
                "metrics.run.wall_minutes": 30.0,
            },
        ]
    )


def test_phase_table_has_a_row_per_timed_run_oldest_first_and_the_phases_in_running_order():
    frame = phase_table(_stage_runs())
    assert list(frame["stage"]) == ["train_emotion", "evaluate"]
    assert list(frame.columns) == [
        "date",
        "stage",
        "run",
        "profile",
        "total",
        "load",
        "train",
        "validate",
        "checkpoints",
        "score",
        "other",
    ]
    train = frame.iloc[0]
    assert (train["run"], train["date"], train["total"], train["train"]) == ("aaaaaaaa", "2026-12-03 06:00", 25.0, 20.0)
    phases = [c for c in frame.columns if c not in ("date", "stage", "run", "profile", "total")]
    assert frame[phases].sum(axis=1).tolist() == list(frame["total"])  # these runs' phases add up to their minutes
    text = markdown({"minutes per phase": frame})
    assert "| 2026-12-03 06:30 | evaluate | bbbbbbbb | – | 1.500 | 0.500 | – | – | – | 0.750 | 0.250 |" in text


def test_phase_table_is_empty_when_no_run_timed_its_phases():
    assert phase_table(_stage_runs().iloc[[2]].dropna(axis=1)).empty


def test_exp_minutes_span_the_stage_runs_of_the_training_run_s_experiment():
    def run(stage, exp, start, end, baseline="abc"):
        return {
            "tags.facelab.stage": stage,
            "tags.dvc.exp_name": exp,
            "tags.dvc.exp_baseline_rev": baseline,
            "start_time": pd.Timestamp(f"2026-12-06T{start}Z"),
            "end_time": pd.Timestamp(f"2026-12-06T{end}Z"),
        }

    stages = pd.DataFrame(
        [
            run("combine", "fast", "10:05:30", "10:06:00"),
            run("evaluate", "fast", "10:05:00", "10:05:30"),
            run("train_keypoints", "fast", "10:00:30", "10:05:00"),
            run("prepare", "fast", "10:00:00", "10:00:30"),
            run("prepare", "fast", "09:00:00", "09:00:30", baseline="older"),  # same name on another baseline
            run("train_keypoints", "other", "11:00:00", "11:30:00"),
        ]
    )
    training = stages[stages["tags.facelab.stage"] == "train_keypoints"]
    unnamed = pd.DataFrame([{**run("train_keypoints", None, "12:00:00", "12:01:00")}])
    minutes = experiment_minutes(pd.concat([training, unnamed], ignore_index=True), stages)
    assert list(minutes[:2]) == [6.0, 30.0]
    assert pd.isna(minutes[2])
    keypoints = {**_runs().iloc[2].to_dict(), "tags.facelab.data": "ytf.csv.gz", **stages.iloc[2].to_dict()}
    table = tables(pd.DataFrame([keypoints]), stages=stages)["keypoints"]
    assert table["exp min"].iloc[0] == 6.0
    assert list(table.columns).index("exp min") == list(table.columns).index("wall min") - 1
