"""The results table and the accuracy-against-minutes picture, built from the MLflow store.

Every training run records what a results row needs (``pipeline.train``, ``tracking``, ``provenance``): the
profile applied and the seed, the data it learnt from, the commit, the CPU model and cores, its wall
and CPU minutes, images/s and its validation figures as served; ``evaluate`` adds the model's test
figures to the same run. ``facelab results`` reads those runs back (SQLite in the workspace or a
team's server: ``MLFLOW_TRACKING_URI``) and prints one Markdown table per task; ``--out DIR``
also writes ``results.md`` and ``accuracy-vs-minutes.png``. A candidate that stopped at its
training stage has a validation figure and no test figure: it never read the test split.
The column "exp min" is the whole ``dvc exp run``'s minutes: from the first start to the last end of the
stage runs that carry the training run's DVC experiment name (``dvc.exp_name``; stages DVC restored from
its cache have no run and took no time); "wall min" is the training stage's own.
``--phases`` adds where the minutes went: one row per finished stage run that timed its phases
(``provenance.phase``), oldest first, with its total wall minutes and the minutes of each phase.
``--level METRIC=VALUE`` (repeatable) adds each training run's minutes to a validation level (``levels``).

The picture has one panel per task (emotion split by its number of classes): 7 classes are scored
by accuracy (FER2013's benchmark figure), other class lists by weighted F1 (facelab's default
champion metric), keypoints by RMSE; filled markers are test figures, hollow ones validation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from facelab.atomic import write_text
from facelab.errors import FacelabError
from facelab.reports import levels as validation_levels
from facelab.reports import pictures
from facelab.tracking import provenance, store

TRAINING_STAGES = ("train_keypoints", "train_emotion")
RESULTS_FILE, PICTURE_FILE = "results.md", "accuracy-vs-minutes.png"
SYNTHETIC = "synthetic"
# column -> MLflow column of search_runs (params, tags and metrics are strings / floats there)
COMMON = {
    "profile": "params.profile",
    "seed": "params.seed",
    "data": "tags.facelab.data",
    "commit": "tags.git_commit",
    "cpu": f"tags.{provenance.CPU_MODEL_TAG}",
    "cores": f"tags.{provenance.CORES_TAG}",
    "wall min": f"metrics.{provenance.WALL_MINUTES}",
    "CPU min": f"metrics.{provenance.CPU_MINUTES}",
    "images/s": "metrics.final.images_per_second",
}
FIGURES = {
    "keypoints": {"val RMSE px": "metrics.final.served_val_rmse_px", "test RMSE px": "metrics.test.rmse_px"},
    "emotion": {
        "val accuracy": "metrics.final.served_val_accuracy",
        "val weighted F1": "metrics.final.served_val_f1_weighted",
        "test accuracy": "metrics.test.accuracy",
        "test weighted F1": "metrics.test.f1_weighted",
        "test macro F1": "metrics.test.f1_macro",
    },
}
EXP_NAME, EXP_BASELINE = "tags.dvc.exp_name", "tags.dvc.exp_baseline_rev"
EXP_MINUTES = "exp min"
DECIMALS = {
    EXP_MINUTES: 1,
    "wall min": 1,
    "loop min": 1,
    "CPU min": 1,
    "images/s": 0,
    "val RMSE px": 2,
    "test RMSE px": 2,
}
FER_CLASSES = 7
PHASES_HEADING = "minutes per phase"
PHASE_METRICS = f"metrics.{provenance.PHASE_PREFIX}"  # the search_runs columns of the phase minutes


def training_runs(experiment: str) -> pd.DataFrame:
    """The FINISHED training runs of ``experiment``: one row each, newest first (mlflow.search_runs' columns)."""
    return _training(stage_runs(experiment, "train_%"))


def stage_runs(experiment: str, stage_like: str = "%") -> pd.DataFrame:
    """The FINISHED stage runs of ``experiment`` whose stage is LIKE ``stage_like``: one row each, newest first."""
    import mlflow

    uri = store.tracking_uri()
    if uri == store.default_tracking_uri() and not (store.workspace_root() / store.DB_FILE).exists():
        raise FacelabError(f"no MLflow store at {store.workspace_root() / store.DB_FILE}: run the pipeline first")
    mlflow.set_tracking_uri(uri)
    found = store.retry(lambda: mlflow.get_experiment_by_name(experiment), "get experiment")
    if found is None:
        raise FacelabError(f"no experiment {experiment!r} in {store._redacted(uri)}")
    runs = store.retry(
        lambda: mlflow.search_runs(
            experiment_ids=[found.experiment_id],
            filter_string=f"tags.`facelab.stage` LIKE '{stage_like}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        ),
        "search runs",
    )
    return runs


def _training(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[_column(runs, "tags.facelab.stage").isin(TRAINING_STAGES)]


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series([None] * len(runs), index=runs.index, dtype=object)


def experiment_minutes(training: pd.DataFrame, stages: pd.DataFrame) -> pd.Series:
    """Each training run's whole ``dvc exp run`` in minutes (index of ``training``): the span of the ``stages``
    runs with its experiment name and baseline; missing where the run has no experiment name."""
    missing = float("nan")
    if stages.empty or "end_time" not in stages:
        return pd.Series(missing, index=training.index, dtype=float)
    keys = pd.DataFrame(
        {"name": _column(stages, EXP_NAME), "baseline": _column(stages, EXP_BASELINE).fillna("")}, index=stages.index
    )
    spans = stages.groupby([keys["name"], keys["baseline"]]).agg(start=("start_time", "min"), end=("end_time", "max"))
    span_minutes = ((spans["end"] - spans["start"]).dt.total_seconds() / 60).to_dict()
    return pd.Series(
        [
            span_minutes.get((name, baseline), missing) if isinstance(name, str) and name else missing
            for name, baseline in zip(_column(training, EXP_NAME), _column(training, EXP_BASELINE).fillna(""))
        ],
        index=training.index,
        dtype=float,
    )


def plotted_minutes(frame: pd.DataFrame) -> pd.Series:
    """The minutes each row of a results table is drawn at: the whole ``dvc exp run``'s ("exp min") where known,
    else the training stage's ("wall min")."""
    minutes = frame["wall min"].astype(float)
    return frame[EXP_MINUTES].astype(float).fillna(minutes) if EXP_MINUTES in frame else minutes


def tables(
    runs: pd.DataFrame,
    include_synthetic: bool = False,
    evaluated_only: bool = False,
    stages: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Task name ("keypoints", "emotion-7", ...) -> its table, one row per run, sorted by profile, seed, date.

    With ``stages`` (every stage run of the store) the tables have the column "exp min"
    (``experiment_minutes``)."""
    out: dict[str, pd.DataFrame] = {}
    for stage in TRAINING_STAGES:
        task = stage.split("_", 1)[1]
        rows = runs[_column(runs, "tags.facelab.stage") == stage]
        if not include_synthetic:
            rows = rows[_column(rows, COMMON["data"]) != SYNTHETIC]
        if rows.empty:
            continue
        frame = pd.DataFrame({"date": rows["start_time"].dt.strftime("%Y-%m-%d")}, index=rows.index)
        for column, source in {**COMMON, **FIGURES[task]}.items():
            frame[column] = _column(rows, source)
        frame["commit"] = frame["commit"].str[:7]
        if stages is not None:
            frame.insert(frame.columns.get_loc("wall min"), EXP_MINUTES, experiment_minutes(rows, stages))
        if evaluated_only:
            frame = frame[frame[[c for c in FIGURES[task] if c.startswith("test")]].notna().any(axis=1)]
        if task == "emotion":
            classes = _column(rows, "params.data.emotion.classes").fillna("").str.count(",") + 1
            for count in sorted(set(classes[frame.index])):
                out[f"emotion-{count}"] = frame[classes[frame.index] == count]
        elif not frame.empty:
            out[task] = frame
    return {task: _sorted(frame) for task, frame in out.items() if not frame.empty}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    seed = pd.to_numeric(frame["seed"], errors="coerce")
    return frame.assign(_seed=seed).sort_values(["profile", "_seed", "date"]).drop(columns="_seed")


def phase_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run that timed its phases, oldest first: when, the stage, the run, the profile (training runs
    log one), its wall minutes ("total") and the minutes of each phase, in ``provenance.PHASES`` order."""
    found = [c[len(PHASE_METRICS) :] for c in runs.columns if c.startswith(PHASE_METRICS)]
    if not found:
        return pd.DataFrame()
    phases = [p for p in provenance.PHASES if p in found] + sorted(set(found) - set(provenance.PHASES))
    rows = runs[runs[[PHASE_METRICS + p for p in phases]].notna().any(axis=1)].sort_values("start_time", kind="stable")
    frame = pd.DataFrame(
        {
            "date": rows["start_time"].dt.strftime("%Y-%m-%d %H:%M"),
            "stage": _column(rows, "tags.facelab.stage"),
            "run": rows["run_id"].str[:8],
            "profile": _column(rows, COMMON["profile"]),
            "total": _column(rows, COMMON["wall min"]),
        },
        index=rows.index,
    )
    for name in phases:
        frame[name] = rows[PHASE_METRICS + name]
    return frame


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        decimals = 1 if column.startswith(validation_levels.MINUTES_PREFIX) else DECIMALS.get(column, 3)
        return f"{value:.{decimals}f}"
    return str(value)


def markdown(task_tables: dict[str, pd.DataFrame]) -> str:
    """One Markdown table per task, under a heading naming it."""
    parts = []
    for task, frame in task_tables.items():
        header = "| " + " | ".join(frame.columns) + " |"
        rule = "|" + "|".join("---" for _ in frame.columns) + "|"
        body = ["| " + " | ".join(_cell(c, row[c]) for c in frame.columns) + " |" for _, row in frame.iterrows()]
        parts.append("\n".join([f"### {task}", "", header, rule, *body]))
    return "\n\n".join(parts) + "\n"


def panel_figure(task: str) -> tuple[str, str, bool]:
    """(validation column, test column, higher is better) plotted for ``task``."""
    if task == "keypoints":
        return "val RMSE px", "test RMSE px", False
    if task == f"emotion-{FER_CLASSES}":
        return "val accuracy", "test accuracy", True
    return "val weighted F1", "test weighted F1", True


def level_rows(training: pd.DataFrame, include_synthetic: bool = False) -> pd.DataFrame:
    """The rows of the results tables, all tasks in one frame, with their task, run id and DVC experiment name:
    what ``levels.level_table`` reads."""
    frames = [
        frame.assign(
            task=task, run=training.loc[frame.index, "run_id"], experiment=_column(training, EXP_NAME)[frame.index]
        )
        for task, frame in tables(training, include_synthetic).items()
    ]
    return pd.concat(frames) if frames else pd.DataFrame()


def run(
    experiment: str,
    out: str | None,
    include_synthetic: bool,
    evaluated_only: bool,
    phases: bool = False,
    levels: list[str] | None = None,
) -> None:
    """Print the results tables (with ``phases`` the phase minutes, with ``levels`` ("METRIC=VALUE") the minutes to
    those validation levels); with ``out`` write them and the picture."""
    wanted = [validation_levels.parse_level(text) for text in levels or []]
    runs = stage_runs(experiment, "%")
    training = _training(runs)
    task_tables = tables(training, include_synthetic, evaluated_only, stages=runs)
    timed = phase_table(runs) if phases else pd.DataFrame()
    if not task_tables and timed.empty:
        hint = "" if include_synthetic else " on real data (--all includes synthetic runs)"
        raise FacelabError(f"no finished training run{hint} in experiment {experiment!r}")
    parts = [markdown(task_tables)] if task_tables else []
    if phases:
        parts.append(markdown({PHASES_HEADING: timed}) if not timed.empty else f"### {PHASES_HEADING}\n\nnone\n")
    if wanted:
        reached = validation_levels.level_table(level_rows(training, include_synthetic), wanted)
        heading = validation_levels.HEADING
        parts.append(markdown({heading: reached}) if not reached.empty else f"### {heading}\n\nnone\n")
    text = "\n".join(parts)
    print(text, end="")
    if out:
        write_text(Path(out) / RESULTS_FILE, text)
        written = [Path(out) / RESULTS_FILE]
        if task_tables:
            panels = {task: (frame, plotted_minutes(frame), *panel_figure(task)) for task, frame in task_tables.items()}
            pictures.accuracy_minutes_png(Path(out) / PICTURE_FILE, panels)
            written.append(Path(out) / PICTURE_FILE)
        print(f"wrote {' and '.join(map(str, written))}")
