"""The benchmarks that drive the pipeline still run on it.

``benchmarks/gpu_check.py`` is the one command to run on a GPU machine, where nobody is watching when it
breaks: here it runs the tiny profile on the CPU, so a benchmark that reads what a stage no longer writes
fails in CI (it once read images/s from the stage's summary long after they had become MLflow-only).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facelab.sandbox import run

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_the_tiny_profile_on_the_cpu(tmp_path):
    result = run([sys.executable, "benchmarks/gpu_check.py", "--profiles", "tiny", "--work", str(tmp_path)], REPO)
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| tiny |")]
    assert [row[2].strip() for row in rows] == ["train_keypoints", "train_emotion"], result.stdout
    for row in rows:
        assert row[3].strip() == "CPU" and row[4].strip() == "float32"
        assert float(row[5]) > 0 and float(row[6]) > 0  # images/s, training seconds: from the MLflow run


def test_the_training_benchmark_measures_a_profile_s_network():
    """``make bench`` measures the real-data profiles' networks: here the fast profiles' (a few batches, no timing
    checked), and a profile that does not exist is one line and exit status 1 before TensorFlow starts."""
    script = [sys.executable, "benchmarks/bench_training.py", "--tasks", "--steps", "2", "--rounds", "1"]
    result = run([*script, "--profiles", "fast-keypoints", "fast-emotion-7"], REPO)
    for name, network in (("fast-keypoints", "width 32, softargmax head"), ("fast-emotion-7", "crop 40, width 32")):
        rows = [line for line in result.stdout.splitlines() if line.startswith(f"| {name} (")]
        assert rows and all(network in row for row in rows), result.stdout
    missing = run([*script, "--profiles", "no-such-profile"], REPO, check=False)
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "profiles/no-such-profile.yaml not found" in missing.stderr
