"""Run one accuracy experiment, time it, and append its figures to ``benchmarks/accuracy_runs.csv``.

Every row of the accuracy-against-CPU-minutes table (``benchmarks/accuracy_report.py``) comes from
this script, so each figure sits beside the command that produced it::

    python benchmarks/accuracy_run.py --task emotion7 --kind proxy --name p3-e7-stride2 -- \\
        dvc exp run train_emotion -n p3-e7-stride2 -S train_emotion.epochs=3 -S train_emotion.stem=stride2

``--task`` names the figure read afterwards: validation (the held-out 10 % of the training file,
what ideas are ranked on) from ``metrics/train_*.json``, scored like the test figure (the saved model
with its test-time averaging; 5 classes: weighted F1) and, when the command rewrote
``metrics/evaluate.json`` (it ran ``evaluate``), the test figure from it (FER2013 PublicTest,
ytf-keypoints-val); ``--evaluated`` makes a run that did not rewrite it an error.

Every run starts from the committed ``params.yaml``: ``facelab params apply`` merges a profile into
it, so a setting that an earlier run applied, and that this run's profile does not name, would
stay and change the recipe unseen. With ``params.yaml`` changed, the script stops before running
anything: ``git checkout params.yaml`` first.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "accuracy_runs.csv"
EVALUATE_FILE = "metrics/evaluate.json"
COLUMNS = [
    "task",
    "kind",
    "name",
    "wall_min",
    "cpu_min",
    "val_metric",
    "val",
    "test_metric",
    "test",
    "finished_utc",
    "note",
    "command",
    "commit",  # HEAD where the command ran, so a profile or proxy file it names can be read as it was
]
# task -> (training metrics file, its validation figures in order of preference, evaluate.json figure). The first
# is the saved model's, scored as the test figure is (with its test-time averaging); the second, the network
# alone, is the only one that code before session 14 wrote.
TASKS = {
    "emotion7": ("metrics/train_emotion.json", ("served_val_accuracy", "val_accuracy"), "emotion.accuracy"),
    "emotion5": ("metrics/train_emotion.json", ("served_val_f1_weighted", "val_accuracy"), "emotion.f1_weighted"),
    "keypoints": ("metrics/train_keypoints.json", ("served_val_rmse_px", "val_rmse_px"), "keypoints.rmse_px"),
}


def _lookup(data: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _params_changed() -> bool:
    """Whether git reports params.yaml changed from the commit (False outside a git checkout)."""
    status = subprocess.run(["git", "status", "--porcelain", "--", "params.yaml"], capture_output=True, text=True)
    return status.returncode == 0 and bool(status.stdout.strip())


def _commit() -> str:
    """HEAD's short hash ('' outside a git checkout)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip() if head.returncode == 0 else ""


def _mtime(path: str) -> float | None:
    return os.path.getmtime(path) if os.path.exists(path) else None


def _read(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--kind", choices=["proxy", "quick", "full"], required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--evaluated", action="store_true", help="the command must run evaluate (the test figure is read when it did)"
    )
    parser.add_argument("--note", default="", help="e.g. what else was running on the machine")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    train_file, val_keys, test_key = TASKS[args.task]
    if _params_changed():
        print(
            "accuracy_run: params.yaml differs from the commit (an earlier run's settings would stay): "
            "git checkout params.yaml first; nothing run",
            file=sys.stderr,
        )
        return 2
    before, evaluated_before = _mtime(train_file), _mtime(EVALUATE_FILE)
    started = time.perf_counter()
    status = subprocess.call(command)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished descendant: DVC and its stages
    if status != 0:
        print(f"accuracy_run: {shlex.join(command)} failed with status {status}; nothing recorded", file=sys.stderr)
        return status
    if before is not None and _mtime(train_file) == before:
        print(f"accuracy_run: {train_file} was not rewritten (a cached stage?); nothing recorded", file=sys.stderr)
        return 1
    evaluated = _mtime(EVALUATE_FILE) not in (None, evaluated_before)
    if args.evaluated and not evaluated:
        print(
            f"accuracy_run: {EVALUATE_FILE} was not rewritten (evaluate did not run); nothing recorded", file=sys.stderr
        )
        return 1
    train = _read(train_file)
    val_key = next((key for key in val_keys if key in train), val_keys[-1])
    test = _lookup(_read(EVALUATE_FILE), test_key) if evaluated else None
    row = {
        "task": args.task,
        "kind": args.kind,
        "name": args.name,
        "wall_min": round(wall / 60, 1),
        "cpu_min": round((usage.ru_utime + usage.ru_stime) / 60, 1),
        "val_metric": val_key,
        "val": round(train[val_key], 4),
        "test_metric": test_key if test is not None else "",
        "test": round(test, 4) if test is not None else "",
        "finished_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "note": args.note,
        "command": shlex.join(command),
        "commit": _commit(),
    }
    append_row(row)
    print(f"accuracy_run: {row}")
    return 0


def append_row(row: dict, path: Path | None = None) -> None:
    path = path or RESULTS
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    sys.exit(main())
