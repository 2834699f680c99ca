"""facelab metrics-gate: workspace metrics vs a baseline commit, in a throw-away git + DVC repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facelab.cli import guarded
from facelab.errors import FacelabError
from facelab.reports import gate

GIT_ENV = {
    "GIT_AUTHOR_NAME": "facelab test",
    "GIT_AUTHOR_EMAIL": "test@facelab.invalid",
    "GIT_COMMITTER_NAME": "facelab test",
    "GIT_COMMITTER_EMAIL": "test@facelab.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "DVC_NO_ANALYTICS": "1",
}

DVC_YAML = """\
stages:
  evaluate:
    cmd: echo
    params:
      - train_keypoints
    metrics:
      - metrics/evaluate.json:
          cache: false
"""

PARAMS = """\
seed: 42
train_keypoints:
  lr: {lr}
gate:
  baseline: main
  keypoints_rmse_px_rel: 0.05
  emotion_f1_weighted_abs: 0.01
  emotion_accuracy_abs: 0.01
"""

BASELINE = {"rmse_px": 2.0, "f1_weighted": 0.80, "accuracy": 0.80}


def _metrics(rmse_px, f1_weighted, accuracy, precision=None) -> str:
    metrics = {
        "keypoints": {"rmse_px": rmse_px, "per_keypoint_rmse_px": [1.0, 2.0], "test_faces": 10},
        "emotion": {"f1_weighted": f1_weighted, "accuracy": accuracy, "f1_macro": 0.7},
    }
    if precision:
        metrics["precision"] = precision
    return json.dumps(metrics, indent=2)


def _sh(cwd: Path, *command: str) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A repository with two commits: tag `no-metrics` (dvc.yaml, params) and `main` (plus metrics)."""
    repo = tmp_path_factory.mktemp("template") / "repo"
    repo.mkdir()
    _sh(repo, "git", "init", "-q", "-b", "main")
    _sh(repo, sys.executable, "-m", "dvc", "init", "-q")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(PARAMS.format(lr=0.001))
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-q", "-m", "pipeline without metrics")
    _sh(repo, "git", "tag", "no-metrics")
    (repo / "metrics").mkdir()
    (repo / "metrics" / "evaluate.json").write_text(_metrics(**BASELINE))
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-q", "-m", "baseline metrics")
    return repo


@pytest.fixture
def repo(template, tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(template, copy)
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(copy)
    return copy


def _change(repo: Path, lr=None, **metrics) -> None:
    (repo / "metrics" / "evaluate.json").write_text(_metrics(**{**BASELINE, **metrics}))
    if lr is not None:
        (repo / "params.yaml").write_text(PARAMS.format(lr=lr))


def _gate(repo: Path, capsys, **kwargs) -> tuple[int, str]:
    status = gate.run(root=repo, params_file=repo / "params.yaml", **kwargs)
    return status, capsys.readouterr().out


def _row(report: str, metric: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {metric} "))


def test_a_regression_past_tolerance_fails_and_names_the_metric(repo, capsys):
    _change(repo, rmse_px=2.2, lr=0.002)  # +10 % where 5 % is allowed
    status, report = _gate(repo, capsys)
    assert status == gate.EXIT_REGRESSED
    assert "❌ failed" in report and "**keypoints.rmse_px** regressed" in report
    row = _row(report, "keypoints.rmse_px")
    assert "| 2.0 | 2.2 | +0.2 (+10.0 %) | +0.1 (5 % of baseline) | ❌ regressed |" in row
    assert "✅ unchanged" in _row(report, "emotion.f1_weighted")
    # the full metrics diff: changed metrics only, as `dvc metrics diff --md` shows them
    assert "| metrics/evaluate.json | keypoints.rmse_px | 2.0 | 2.2 | 0.2 |" in report
    assert "| metrics/evaluate.json | emotion.accuracy |" not in report
    # the params diff shows the changed parameter
    assert "| params.yaml | train_keypoints.lr | 0.001 | 0.002 |" in report


def test_an_improvement_passes(repo, capsys):
    _change(repo, rmse_px=1.8, f1_weighted=0.85, accuracy=0.9)
    status, report = _gate(repo, capsys)
    assert status == gate.EXIT_PASSED
    assert "✅ passed" in report and "❌" not in report
    assert all("✅ improved" in _row(report, m) for m in gate.RULES)
    assert "No parameter changed." in report


def test_a_change_within_tolerance_passes(repo, capsys):
    # rmse +4.5 % (5 % allowed); weighted F1 down by exactly the allowed 0.01 (float noise forgiven)
    _change(repo, rmse_px=2.09, f1_weighted=0.79, accuracy=0.795)
    status, report = _gate(repo, capsys)
    assert status == gate.EXIT_PASSED, report
    assert all("✅ within tolerance" in _row(report, m) for m in gate.RULES)


def test_a_difference_of_precision_is_not_comparable_not_a_regression(repo, capsys):
    bf16 = {"keypoints": "mixed_bfloat16", "emotion": "mixed_bfloat16"}
    (repo / "metrics" / "evaluate.json").write_text(_metrics(**BASELINE, precision=bf16))
    _sh(repo, "git", "commit", "-q", "-am", "baseline made in bfloat16")
    # keypoints now in float32 and 10 % worse: another precision, not compared; emotion: same precision, compared
    _change(repo, rmse_px=2.2, f1_weighted=0.70, precision={"keypoints": "float32", "emotion": "mixed_bfloat16"})
    status, report = _gate(repo, capsys, baseline="HEAD")
    assert "➖ not comparable (precision mixed_bfloat16 vs float32)" in _row(report, "keypoints.rmse_px")
    assert "❌ regressed" in _row(report, "emotion.f1_weighted")
    assert "**keypoints.rmse_px** regressed" not in report
    assert status == gate.EXIT_REGRESSED  # the emotion regression, not the keypoint one
    _change(repo, rmse_px=2.2, precision={"keypoints": "float32", "emotion": "mixed_bfloat16"})
    status, report = _gate(repo, capsys, baseline="HEAD")
    assert status == gate.EXIT_PASSED, report


def test_an_older_baseline_s_precision_comes_from_its_training_metrics(repo, capsys):
    (repo / "metrics" / "train_keypoints.json").write_text(json.dumps({"precision": "mixed_bfloat16"}))
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-q", "-m", "training metrics with their precision")
    _change(repo, rmse_px=2.2, precision={"keypoints": "float32", "emotion": "float32"})
    status, report = _gate(repo, capsys, baseline="HEAD")
    assert status == gate.EXIT_PASSED, report
    assert "not comparable" in _row(report, "keypoints.rmse_px")


def test_a_missing_baseline_revision_is_reported_not_a_crash(repo, capsys):
    _change(repo, rmse_px=3.0)
    status, report = _gate(repo, capsys, baseline="no-such-branch")
    assert status == 0
    assert report.startswith("no baseline metrics at no-such-branch: nothing to compare")
    assert report.count("\n") == 1
    status, _ = _gate(repo, capsys, baseline="no-such-branch", strict=True)
    assert status == gate.EXIT_NO_BASELINE_STRICT


def test_a_baseline_without_metrics_is_reported(repo, capsys):
    status, report = _gate(repo, capsys, baseline="no-metrics", strict=True)
    assert status == gate.EXIT_NO_BASELINE_STRICT
    assert report.startswith("no baseline metrics at no-metrics: nothing to compare")


def test_a_missing_workspace_metrics_file_is_a_facelab_error(repo):
    (repo / "metrics" / "evaluate.json").unlink()
    with pytest.raises(FacelabError, match="metrics/evaluate.json"):
        gate.run(root=repo, params_file=repo / "params.yaml")


def test_the_cli_exits_1_on_a_regression_and_writes_the_report(repo):
    _change(repo, f1_weighted=0.70)
    done = subprocess.run(
        [sys.executable, "-m", "facelab.cli", "metrics-gate", "--baseline", "main", "--out", "gate.md"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert "❌ regressed" in _row(done.stdout, "emotion.f1_weighted")
    assert "| 0.8 | 0.7 | -0.1 (-12.5 %) | -0.01 | ❌ regressed |" in done.stdout
    assert (repo / "gate.md").read_text() == done.stdout


def test_rules_name_their_tolerances_in_the_gate_section():
    import yaml

    gate_section = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())["gate"]
    for rule in gate.RULES.values():
        assert rule.tolerance in gate_section
        assert rule.better in (gate.LOWER, gate.HIGHER) and rule.kind in (gate.RELATIVE, gate.ABSOLUTE)


def test_guarded_passes_on_an_int_exit_status():
    assert guarded(lambda: 1) == 1
    assert guarded(lambda: {"a": 1}) == 0
    assert guarded(lambda: None) == 0
