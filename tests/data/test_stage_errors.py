"""Bad input reaching a real stage: one line naming the file and row, exit status 1, nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from facelab.formats import KEYPOINT_COLUMNS
from facelab.sandbox import make_project_copy


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project_copy(tmp_path_factory.mktemp("errors") / "repo")


def _set(path, **sections):
    params = yaml.safe_load((path / "params.yaml").read_text())
    for dotted, value in sections.items():
        node = params
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _prepare(path, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "stages/prepare.py"], cwd=path, env=env, capture_output=True, text=True, timeout=300
    )


def _keypoints_csv(path, rows: int, short_row: int | None = None) -> None:
    lines = [",".join(KEYPOINT_COLUMNS) + ",Image"]
    for r in range(rows):
        values = 9215 if r + 1 == short_row else 9216
        lines.append(",".join(["48.0"] * 30) + "," + " ".join(["7"] * values))
    path.write_text("\n".join(lines) + "\n")


def test_short_pixel_row_stops_prepare_with_one_line(project):
    path, env = project
    _keypoints_csv(path / "bad.csv", rows=30, short_row=12)
    _set(path, data__keypoints__source="file", data__keypoints__path="bad.csv")
    result = _prepare(path, env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("facelab: error: ") and "bad.csv" in last and "row 12" in last and "9215" in last
    assert "Traceback" not in result.stderr
    assert not (path / "data/prepared").exists() or not any((path / "data/prepared").iterdir())


def test_class_without_examples_is_named(project):
    path, env = project
    _keypoints_csv(path / "good.csv", rows=40)
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"] + [
        f"{label},{' '.join(map(str, rng.integers(0, 255, 2304)))},Training" for label in [0, 3] * 20
    ]
    (path / "fer.csv").write_text("\n".join(rows) + "\n")
    _set(
        path,
        data__keypoints__path="good.csv",
        data__emotion__source="file",
        data__emotion__path="fer.csv",
        data__emotion__classes=["anger", "happiness", "surprise"],
    )
    result = _prepare(path, env)
    assert result.returncode == 1
    assert "'surprise' has no training examples" in result.stderr.strip().splitlines()[-1]


def test_bad_parameter_is_rejected_before_any_work(project):
    path, env = project
    _set(path, train_keypoints__lr="fast")
    result = _prepare(path, env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "facelab: error: params.yaml: parameter train_keypoints.lr = 'fast' is not a number > 0.0 and <= 1.0"
    )
