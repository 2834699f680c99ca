"""The ``combine`` stage: the champion models evaluate chose, run together on test faces.

Reads ``models/champions.json`` (written by ``evaluate``: the registered versions that held
``champion`` after its decision; a declared input in ``dvc.yaml``, so moving ``champion`` makes
this stage stale) and downloads exactly those versions (not whatever the alias names now; the
emotion model's class list comes from its version's ``classes`` tag), predicts keypoints and
emotion for the first test faces through ``FaceAnalyzer``, writes ``reports/combine/faces.png``
(keypoints drawn, emotion and probability written on each face) and
``reports/combine/predictions.json``, and registers the served analyser built from the same two
versions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from facelab.atomic import write_json
from facelab.config import REPORTS_DIR
from facelab.data import artifacts
from facelab.errors import FacelabError
from facelab.formats import KEYPOINT_NAMES
from facelab.reports import pictures
from facelab.serve.keras_runtime import FaceAnalyzer
from facelab.serve.pyfunc import fetch_versions, log_and_register_analyzer
from facelab.tracking import store
from facelab.tracking.provenance import phase

STAGE = "combine"


def read_champions(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """``models/champions.json`` -> (task -> registered name, task -> version); a FacelabError if unusable."""
    try:
        entries = json.loads(Path(path).read_text())
        return (
            {task: str(entries[task]["name"]) for task in artifacts.TASKS},
            {task: int(entries[task]["version"]) for task in artifacts.TASKS},
        )
    except FileNotFoundError:
        raise FacelabError(f"{path}: not found (run evaluate first: dvc repro evaluate)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FacelabError(f"{path}: not a champions file written by evaluate ({exc!r})") from None


def run(params: dict) -> list[dict]:
    cfg, names = params[STAGE], params["tracking"]
    files = artifacts.stage_files(STAGE)
    reports = REPORTS_DIR / STAGE
    with (
        store.stage_run(STAGE, {"combine": cfg}, names["experiment"]),
        tempfile.TemporaryDirectory(prefix="facelab-champions-") as tmp,
    ):
        with phase("load"):  # the champion versions downloaded and loaded, the test faces
            model_names, versions = read_champions(files["champions"])
            champions = fetch_versions(model_names, versions, Path(tmp), source=str(files["champions"]))
            analyzer = FaceAnalyzer.from_champions(champions)
            faces = artifacts.load_split(files["keypoints_test"])["images"][: cfg["faces"]]
        with phase("predict"):
            records = analyzer.analyse(faces)
        for index, record in enumerate(records):
            record["face"] = index
        points = np.array([[c for name in KEYPOINT_NAMES for c in r["keypoints"][name]] for r in records])
        with phase("pictures"):
            pictures.face_grid(
                reports / "faces.png",
                faces,
                predicted=points,
                columns=cfg["columns"],
                titles=[f"{r['emotion']} {r['probability']:.2f}" for r in records],
                suptitle="champion models: predicted keypoints and emotion",
            )
        with phase("save"):
            write_json(reports / "predictions.json", {"champion_versions": champions.versions, "faces": records})
        with phase("log"):
            store.log_params({"champion_version": champions.versions})
            store.log_artifacts(reports / "faces.png", reports / "predictions.json", folder=STAGE)
        with phase("register"):  # the same two versions, one served model
            log_and_register_analyzer(champions, names["analyzer_model"])
    return records
