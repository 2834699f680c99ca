"""benchmarks/accuracy_run.py, the script behind every row of the accuracy-against-minutes table: a run
starts from the committed params.yaml, and the test figure is read whenever the command ran evaluate."""

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy_run.py"


@pytest.fixture()
def accuracy_run(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("accuracy_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "runs.csv")
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    (repo / "params.yaml").write_text("train_emotion:\n  epochs: 10\n")
    for command in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "params"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *command], cwd=repo, check=True)
    monkeypatch.chdir(repo)
    return module


def _writes(**files: dict) -> list[str]:
    """A command that writes these metrics files (name without .json -> content)."""
    code = "".join(f"open('metrics/{name}.json', 'w').write({json.dumps(json.dumps(c))});" for name, c in files.items())
    return ["--", sys.executable, "-c", code]


TRAINED = {"train_emotion": {"val_accuracy": 0.61}}
EVALUATED = {"evaluate": {"emotion": {"accuracy": 0.66}}}


def _rows(path):
    return list(csv.DictReader(path.open())) if path.exists() else []


def test_the_test_figure_is_read_when_the_command_ran_evaluate(accuracy_run):
    args = ["--task", "emotion7", "--kind", "quick", "--name", "q"]
    assert accuracy_run.main(args + _writes(**TRAINED, **EVALUATED)) == 0
    assert accuracy_run.main(args + _writes(**TRAINED)) == 0  # evaluate.json now older than this run
    first, second = _rows(accuracy_run.RESULTS)
    assert (first["val"], first["test"], second["test"]) == ("0.61", "0.66", "")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert first["commit"] == head  # where the profile and proxy files it applied can be read


def test_validation_is_read_as_served_when_the_stage_wrote_it(accuracy_run):
    # Ideas are ranked on the figure scored like the test one: the saved model with its test-time averaging
    # (and weighted F1 for 5 classes); runs of code that wrote only the network's own figure still record it.
    served = {"train_emotion": {"val_accuracy": 0.61, "served_val_accuracy": 0.63, "served_val_f1_weighted": 0.62}}
    assert accuracy_run.main(["--task", "emotion7", "--kind", "proxy", "--name", "a"] + _writes(**served)) == 0
    assert accuracy_run.main(["--task", "emotion5", "--kind", "proxy", "--name", "b"] + _writes(**served)) == 0
    assert accuracy_run.main(["--task", "emotion7", "--kind", "proxy", "--name", "c"] + _writes(**TRAINED)) == 0
    rows = [(r["val_metric"], r["val"]) for r in _rows(accuracy_run.RESULTS)]
    assert rows == [("served_val_accuracy", "0.63"), ("served_val_f1_weighted", "0.62"), ("val_accuracy", "0.61")]


def test_evaluated_without_evaluate_records_nothing(accuracy_run):
    args = ["--task", "emotion7", "--kind", "quick", "--name", "q", "--evaluated"]
    assert accuracy_run.main(args + _writes(**TRAINED)) == 1
    assert _rows(accuracy_run.RESULTS) == []


def test_a_changed_params_yaml_stops_the_run_before_it_starts(accuracy_run):
    Path("params.yaml").write_text("train_emotion:\n  epochs: 10\n  ema: 0.999\n")  # left by an earlier run
    args = ["--task", "emotion7", "--kind", "proxy", "--name", "p"]
    assert accuracy_run.main(args + _writes(**TRAINED)) == 2
    assert not Path("metrics/train_emotion.json").exists() and _rows(accuracy_run.RESULTS) == []


def test_every_file_a_recorded_run_applied_is_in_the_repository():
    # The proxies' settings lived in /tmp files: a row must not name a file nobody else can read.
    root = SCRIPT.parents[1]
    rows = _rows(root / "benchmarks" / "accuracy_runs.csv")
    applied = {m for r in rows for m in re.findall(r"facelab params apply (\S+?)['\"]?(?:\s|$)", r["command"])}
    assert applied, "no command applies a file: the pattern above is out of date"
    missing = [
        name
        for name in applied
        if not (root / "benchmarks" / "proxies" / Path(name).name if name.startswith("/tmp/") else root / name).exists()
    ]
    assert missing == []
