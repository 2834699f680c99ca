"""Minutes to a validation level: when each training run's loop first reached a figure (``facelab results --level``).

A recipe that reaches a level in fewer minutes lets more ideas fit in a day, so recipes are ranked by it. Every
training run logs, per epoch, Keras's validation metrics (``val_accuracy``, ``val_loss``, ...: the bare network,
without test-time averaging, BatchNorm statistics as training left them) and the minutes of the epoch's training
and validation (``provenance.EPOCH_MINUTES``). ``level_table`` gives, for each run and level, the minutes of the
training loop (training and validation summed from the first epoch) to the end of the first epoch whose figure
reached the level, and nothing where no epoch did. A metric whose name holds ``loss``, ``mse`` or ``rmse`` reaches a
level by falling to it, any other by rising to it.

The minutes are the loop's alone: a run's start (imports, loading, building) and end (BatchNorm recompute,
scoring as served, saving, registering) are in its phase minutes (``--phases``), the whole ``dvc exp run`` in the
results tables' "exp min". A schedule that decays to its last epoch (cosine) reaches its best figure at its end,
so a level near that figure ranks recipes of different lengths by their budgets more than by their speed:
compare levels that several recipes pass on their way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pandas as pd

from facelab.errors import FacelabError
from facelab.tracking import provenance, store

LOWER_IS_BETTER = ("loss", "mse", "rmse")
HEADING = "minutes to a validation level"
MINUTES_PREFIX = "min to "  # the columns of the levels
History = Callable[[str, str], dict[int, float]]  # (run id, metric) -> {epoch: value}


def parse_level(text: str) -> tuple[str, float]:
    """``"val_accuracy=0.65"`` -> ("val_accuracy", 0.65)."""
    metric, sep, value = text.partition("=")
    try:
        if not sep or not metric.strip():
            raise ValueError
        return metric.strip(), float(value)
    except ValueError:
        raise FacelabError(f"--level {text!r}: expected METRIC=VALUE, e.g. val_accuracy=0.65") from None


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in LOWER_IS_BETTER)


def column(metric: str, level: float) -> str:
    """The table's column of one level, e.g. ``min to val_accuracy >= 0.65``."""
    return f"{MINUTES_PREFIX}{metric} {'<=' if lower_is_better(metric) else '>='} {level:g}"


def minutes_to(values: dict[int, float], minutes: dict[int, float], level: float, lower: bool) -> float | None:
    """Loop minutes to the end of the first epoch (by number) whose value reached ``level``; None if none did or
    an epoch before it has no minutes."""
    spent = 0.0
    for epoch in sorted(values):
        if epoch not in minutes:
            return None
        spent += minutes[epoch]
        if (values[epoch] <= level) if lower else (values[epoch] >= level):
            return spent
    return None


@functools.cache
def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def mlflow_history(run_id: str, metric: str) -> dict[int, float]:
    """{step: value} of one metric of one run, from the tracking store ``store.tracking_uri()`` names (one client
    per store, for the several histories of every run)."""
    client = _client(store.tracking_uri())
    found = store.retry(lambda: client.get_metric_history(run_id, metric), f"metric history of {metric}")
    return {int(point.step): float(point.value) for point in found}


def epoch_minutes(run_id: str, history: History) -> dict[int, float]:
    """{epoch: training + validation minutes} of one run."""
    parts = [history(run_id, name) for name in provenance.EPOCH_MINUTES.values()]
    return {epoch: sum(part.get(epoch, 0.0) for part in parts) for epoch in parts[0]}


def level_table(rows: pd.DataFrame, levels: list[tuple[str, float]], history: History = mlflow_history) -> pd.DataFrame:
    """One row per training run of ``rows`` (``results.tables``' rows: ``results`` columns plus the run id in
    "run") that logged one of the levels' metrics per epoch: its minutes to each level and its best figures."""
    metrics = list(dict.fromkeys(metric for metric, _ in levels))
    out = []
    for _, row in rows.iterrows():
        values = {metric: history(row["run"], metric) for metric in metrics}
        if not any(values.values()):
            continue
        minutes = epoch_minutes(row["run"], history)
        found = {key: row[key] for key in ("task", "date", "profile", "seed", "experiment", "commit")}
        found["epochs"] = max(len(v) for v in values.values())
        found["loop min"] = sum(minutes.values()) if minutes else None
        for metric, level in levels:
            found[column(metric, level)] = minutes_to(values[metric], minutes, level, lower_is_better(metric))
        for metric in metrics:
            best = (min if lower_is_better(metric) else max)(values[metric].values()) if values[metric] else None
            found[f"best {metric}"] = best
        out.append(found)
    return pd.DataFrame(out)
