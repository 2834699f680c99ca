"""Pictures: faces with keypoints and labels, class counts, confusion matrices. matplotlib (Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facelab.atomic import atomic_path  # noqa: E402

TRUE_COLOUR, PRED_COLOUR = "#00c853", "#ff1744"


def _save(fig, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def face_grid(
    path: str | Path,
    images: np.ndarray,
    *,
    keypoints: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    suptitle: str = "",
) -> None:
    """A grid of grayscale faces, optional true (green) and predicted (red) keypoints, and titles."""
    n = len(images)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        for points, colour in ((keypoints, TRUE_COLOUR), (predicted, PRED_COLOUR)):
            if points is not None:
                xy = np.asarray(points[i]).reshape(-1, 2)
                ax.scatter(xy[:, 0], xy[:, 1], s=9, c=colour, marker="o", linewidths=0)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    _save(fig, path)


def emotion_samples(
    path: str | Path, images: np.ndarray, labels: np.ndarray, classes: Sequence[str], per_class: int = 6
) -> None:
    """Sample faces of each class (one row each) and a bar chart of the class counts."""
    counts = np.bincount(labels, minlength=len(classes))
    fig = plt.figure(figsize=(1.4 * per_class + 4, 1.4 * len(classes)))
    grid = fig.add_gridspec(len(classes), per_class + 3)
    for row, name in enumerate(classes):
        chosen = np.flatnonzero(labels == row)[:per_class]
        for col in range(per_class):
            ax = fig.add_subplot(grid[row, col])
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(images[chosen[col]], cmap="gray", vmin=0, vmax=255)
            if col == 0:
                ax.set_title(name, fontsize=8, loc="left")
    bars = fig.add_subplot(grid[:, per_class:])
    bars.barh(list(classes)[::-1], counts[::-1])
    bars.set_title("examples per class")
    for y, c in enumerate(counts[::-1]):
        bars.text(c, y, f" {c}", va="center", fontsize=8)
    _save(fig, path)


def confusion_png(path: str | Path, matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> None:
    """The confusion matrix as a heat map: rows are true classes, columns predicted, with counts."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    top = matrix.max() if matrix.size else 0
    for (r, c), v in np.ndenumerate(matrix):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=8)
    _save(fig, path)


def accuracy_minutes_png(path: str | Path, panels: dict) -> None:
    """One panel per task: each run's figure against its minutes, labelled by profile.

    ``panels``: task -> (table with "profile" and "seed" columns, each row's minutes (a Series on the table's
    index), validation column, test column, higher is better). Hollow markers: validation as served; filled: test.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (task, (frame, minutes, val_col, test_col, higher)) in zip(axes[0], panels.items()):
        minutes = minutes.astype(float)
        for column, filled in ((val_col, False), (test_col, True)):
            values = frame[column].astype(float)
            shown = values.notna() & minutes.notna()
            ax.scatter(
                minutes[shown],
                values[shown],
                s=36,
                facecolors=PRED_COLOUR if filled else "none",
                edgecolors=PRED_COLOUR,
                label=column,
            )
        for (_, row), value, at in zip(frame.iterrows(), frame[test_col].fillna(frame[val_col]).astype(float), minutes):
            if pd_notna(at) and pd_notna(value):
                ax.annotate(f"{row['profile']} s{row['seed']}", (float(at), value), fontsize=7)
        ax.set_title(f"{task} ({'higher' if higher else 'lower'} is better)")
        ax.set_xlabel("minutes (dvc exp run; else training)")
        ax.set_ylabel(test_col.replace("test ", ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def pd_notna(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
