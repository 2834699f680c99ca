"""Accuracy against CPU minutes: ``benchmarks/accuracy_runs.csv`` -> ``benchmarks/ACCURACY.md`` and a picture.

Each row of the CSV was appended by ``benchmarks/accuracy_run.py`` from the run it timed; this
script only draws them: one panel per task, wall minutes on x, the figure on y (the test figure where
the run was evaluated, else the validation figure, drawn hollow), labelled by run name, with the
issue's quick and full goals as lines::

    python benchmarks/accuracy_report.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE / "accuracy_runs.csv"
TABLE = HERE / "ACCURACY.md"
PICTURE = HERE.parent / "docs" / "results" / "accuracy-vs-minutes.png"
# task -> (title, quick goal, full goal, higher is better)
GOALS = {
    "emotion7": ("emotion, 7 classes: accuracy (FER2013)", 0.67, 0.70, True),
    "emotion5": ("emotion, 5 classes: weighted F1 (FER2013)", 0.81, 0.85, True),
    "keypoints": ("keypoints: RMSE px (YTF, unseen people)", 1.80, 1.60, False),
}
BUDGET_MIN = {"quick": 45, "full": 120}
LABEL_LINE = 0.045  # the height of a name, as a fraction of the values a panel spans
LABEL_SPAN_MIN = 45  # names of points closer than this in minutes may overlap: they are kept a line apart


def read_runs(path: Path = RUNS) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _figure(row: dict) -> tuple[float, bool]:
    """(figure, is it the test figure)."""
    return (float(row["test"]), True) if row["test"] else (float(row["val"]), False)


def write_table(runs: list[dict], path: Path = TABLE) -> None:
    lines = [
        "# Accuracy against CPU minutes",
        "",
        "Made by `python benchmarks/accuracy_report.py` from `benchmarks/accuracy_runs.csv`; a row was",
        "timed and read by `python benchmarks/accuracy_run.py ... -- <command>` on a 2-core machine unless",
        "its note says otherwise. *CPU min* is the user + system time of the command's processes. *val*",
        "is the held-out 10 % of the training file (what ideas were ranked on), its metric named: `served_val_*`",
        "(from session 14 on) scores the saved model with its test-time averaging, as *test* does, and the",
        "older `val_*` the network alone. *test* is FER2013 PublicTest",
        "or ytf-keypoints-val (unseen people), read only for the runs in the README. Wall minutes include",
        "every stage the command ran.",
        "",
        "A command's `/tmp/prox/<name>.yaml` or `/tmp/<name>.yaml` (the settings a run applied on top of its",
        "profile) is kept, as found on the machine that ran it, in `benchmarks/proxies/<name>.yaml`; new",
        "runs apply that folder's files directly. *at* is the commit the command ran at (recorded from",
        "session 11 on): a profile or proxy file means what it said there.",
        "",
    ]
    for task, (title, quick, full, higher) in GOALS.items():
        rows = [r for r in runs if r["task"] == task]
        if not rows:
            continue
        better = "higher" if higher else "lower"
        lines += [
            f"## {title}",
            "",
            f"Goals ({better} is better): quick {quick} within {BUDGET_MIN['quick']} min, "
            f"full {full} within {BUDGET_MIN['full']} min.",
            "",
            "| run | kind | wall min | CPU min | val | test | note | command | at |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            val = f"{r['val_metric']} {r['val']}" if r["val"] else "-"
            test = f"{r['test_metric']} {r['test']}" if r["test"] else "-"
            lines.append(
                f"| {r['name']} | {r['kind']} | {r['wall_min']} | {r['cpu_min'] or '-'} | {val} | {test} | "
                f"{r['note']} | `{r['command']}` | {r.get('commit') or '-'} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def _label_heights(named: list[tuple], line: float) -> list[float]:
    """Where each named point's name goes: at its point, or moved down just enough to clear the names
    already placed above it that are within LABEL_SPAN_MIN minutes (a grey line then joins it to its point)."""
    placed: list[tuple[float, float]] = []  # (minutes, height), highest first
    heights = {}
    for index in sorted(range(len(named)), key=lambda i: -named[i][1]):
        minutes, height = named[index][0], named[index][1]
        for other_minutes, other_height in placed:
            if abs(other_minutes - minutes) < LABEL_SPAN_MIN and height > other_height - line:
                height = other_height - line
        placed = sorted([*placed, (minutes, height)], key=lambda p: -p[1])
        heights[index] = height
    return [heights[i] for i in range(len(named))]


def draw(runs: list[dict], path: Path = PICTURE) -> None:
    runs = [r for r in runs if r["wall_min"]]  # a run whose wall time was not recorded is in the table only
    tasks = [t for t in GOALS if any(r["task"] == t for r in runs)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        title, quick, full, higher = GOALS[task]
        points = [(float(r["wall_min"]), *_figure(r), r["name"]) for r in runs if r["task"] == task]
        values = [v for _, v, *_ in points] + [quick, full]
        line = LABEL_LINE * (max(values) - min(values))  # one line of a name, in the panel's units
        proxies = [p for p in points if not p[2]]
        best_proxy = (max if higher else min)(proxies, key=lambda p: p[1]) if proxies else None
        named = [p for p in points if p[2] or p is best_proxy]  # the proxy cloud unnamed but for its best
        for minutes, value, is_test, _ in points:
            ax.scatter(minutes, value, s=36, facecolors="C0" if is_test else "none", edgecolors="C0")
        for (minutes, value, _, name), height in zip(named, _label_heights(named, line)):
            moved = dict(arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.6"}) if height != value else {}
            ax.annotate(name, (minutes, value), (minutes + 2, height), fontsize=7, va="center", **moved)
        ax.axhline(quick, color="C2", ls="--", lw=1, label=f"quick goal {quick} (<= {BUDGET_MIN['quick']} min)")
        ax.axhline(full, color="C3", ls=":", lw=1, label=f"full goal {full} (<= {BUDGET_MIN['full']} min)")
        for minutes in BUDGET_MIN.values():
            ax.axvline(minutes, color="0.7", lw=0.8)
        ax.set_xlim(0, max(BUDGET_MIN.values()) + 10)  # the same minutes on every panel: what the budgets buy
        ax.margins(y=0.15)
        ax.set_xlabel("wall minutes on 2 CPU cores")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        "filled: test figure; hollow: validation figure of a short proxy run (the best one named; all in "
        "benchmarks/ACCURACY.md); grey lines: the "
        f"{BUDGET_MIN['quick']} and {BUDGET_MIN['full']} minute budgets\n"
        "minutes on the machine each run had: session 13's trained about 1.6x as fast (images/s in each note)",
        fontsize=8,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    runs = read_runs()
    write_table(runs)
    draw(runs)
    print(f"wrote {TABLE} and {PICTURE} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
